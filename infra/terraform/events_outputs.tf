# The storage-event bridge's settings (docs/STORAGE_EVENTS.md): where it reads, and the policy its role needs.

output "storage_events_queue_url" {
  description = "SQS queue the bridge long-polls and forwards to Kafka topic waste.storage.events."
  value       = aws_sqs_queue.storage_events.id
}

output "storage_events_queue_arn" {
  value = aws_sqs_queue.storage_events.arn
}

output "storage_events_dead_letter_queue_url" {
  description = "Notifications delivered var.storage_events_max_receive_count times without success."
  value       = aws_sqs_queue.storage_events_dlq.id
}

output "storage_events_bridge_policy_arn" {
  description = "Attach to the bridge's role: receive and delete on the storage-event queue only."
  value       = aws_iam_policy.storage_events_bridge.arn
}
