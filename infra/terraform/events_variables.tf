# Settings of the storage-event path (events.tf): S3 ObjectCreated notifications -> SQS -> Kafka.

variable "storage_events_prefix" {
  description = "Key prefix whose ObjectCreated events are notified: the API's uploads (the service's STORAGE_UPLOAD_PREFIX)."
  type        = string
  default     = "uploads/"
}

variable "storage_events_visibility_timeout_seconds" {
  description = "How long a message the bridge received stays invisible before SQS hands it out again (bridge crashed before deleting it)."
  type        = number
  default     = 60

  validation {
    condition     = var.storage_events_visibility_timeout_seconds >= 10 && var.storage_events_visibility_timeout_seconds <= 43200
    error_message = "Between 10 seconds and 12 hours."
  }
}

variable "storage_events_retention_seconds" {
  description = "How long an undelivered notification waits in the queue (the bridge or Kafka down): 4 days."
  type        = number
  default     = 345600
}

variable "storage_events_max_receive_count" {
  description = "Deliveries to the bridge before a notification moves to the dead-letter queue."
  type        = number
  default     = 10
}
