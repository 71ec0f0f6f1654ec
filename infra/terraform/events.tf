# Storage events as the trigger (docs/STORAGE_EVENTS.md): every object created under the uploads prefix becomes a
# message on waste.storage.events, where the worker's storage-event agent turns it into the job's upload-complete
# event (once per job, whether the notification or the app's upload-complete call comes first).
#
# Path: S3 event notification -> SQS queue (+ dead-letter queue) -> the bridge -> Kafka.
#
# Why SQS and not EventBridge:
# * Delivery is durable end to end. S3 delivers notifications to SQS at least once; the message stays in the queue
#   (var.storage_events_retention_seconds) until the bridge deletes it, which it does only after Kafka acknowledged
#   the produce (acks=all). A bridge or broker outage delays jobs, it loses none; what fails repeatedly lands in the
#   dead-letter queue instead of vanishing.
# * Nothing between S3 and the queue to run or pay for: the notification filters on the prefix itself, and SQS
#   charges per request (about $0.40 per million, long polling batches 10 messages per receive).
# * EventBridge would add a rule and still need SQS or a Lambda in front of Kafka: EventBridge (and EventBridge
#   Pipes) cannot target a self-managed Kafka cluster, only MSK through Pipes' sources, not its targets. Its
#   advantages (fan-out to many targets, content filtering beyond prefix/suffix, archive and replay) are not
#   needed by one consumer, and its retry window (24 h) is shorter than the queue's retention.
# * The agent accepts the raw S3 notification, the SQS message (Body) and SNS-wrapped bodies, so the bridge may
#   be any SQS-to-Kafka forwarder (a Kafka Connect SQS source connector, or a small consumer) that copies the
#   message body.
#
# The notifier is S3 itself, so notifications carry the object key (versitygw's POST notifications do not) and
# size; keys are URL-encoded, which the agent decodes. The worker's reconciliation pass stays on as a safety net
# (STORAGE_RECONCILE_INTERVAL_SECONDS), and can run rarely in production: S3 -> SQS does not drop events.

resource "aws_sqs_queue" "storage_events_dlq" {
  name                      = "${local.name}-storage-events-dlq"
  message_retention_seconds = 1209600 # 14 days, the maximum: time to look at what failed
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "storage_events" {
  #checkov:skip=CKV_AWS_27:Encrypted with SQS-managed keys (sqs_managed_sse_enabled); a customer-managed KMS key would need a key policy for the S3 service principal and a KMS call per message, for object keys that are random job ids.
  name                       = "${local.name}-storage-events"
  visibility_timeout_seconds = var.storage_events_visibility_timeout_seconds
  message_retention_seconds  = var.storage_events_retention_seconds
  receive_wait_time_seconds  = 20 # long polling: fewer empty receives
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.storage_events_dlq.arn
    maxReceiveCount     = var.storage_events_max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "storage_events_dlq" {
  queue_url = aws_sqs_queue.storage_events_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.storage_events.arn]
  })
}

# Only this bucket, in this account, may send; nothing reaches the queue without TLS.
data "aws_iam_policy_document" "storage_events_queue" {
  statement {
    sid       = "S3ObjectCreated"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.storage_events.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.images.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.storage_events.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "storage_events" {
  queue_url = aws_sqs_queue.storage_events.id
  policy    = data.aws_iam_policy_document.storage_events_queue.json
}

# One notification configuration per bucket: this is it. ObjectCreated covers PUT, POST (the app's pre-signed
# uploads), Copy and CompleteMultipartUpload.
resource "aws_s3_bucket_notification" "images" {
  bucket = aws_s3_bucket.images.id

  queue {
    id            = "storage-events"
    queue_arn     = aws_sqs_queue.storage_events.arn
    events        = ["s3:ObjectCreated:*"]
    filter_prefix = var.storage_events_prefix
  }

  # S3 checks that it may send when the configuration is saved.
  depends_on = [aws_sqs_queue_policy.storage_events]
}

# What the bridge needs: read and delete from the queue, nothing else. Attach it to the role the bridge runs as.
data "aws_iam_policy_document" "storage_events_bridge" {
  statement {
    sid = "ConsumeStorageEvents"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.storage_events.arn]
  }
}

resource "aws_iam_policy" "storage_events_bridge" {
  name        = "${local.name}-storage-events-bridge"
  description = "Consume the storage-event queue (S3 ObjectCreated -> Kafka waste.storage.events)."
  policy      = data.aws_iam_policy_document.storage_events_bridge.json
}

# An undeliverable notification is a job waiting on the reconciliation pass: worth a look.
resource "aws_cloudwatch_metric_alarm" "storage_events_dead_letters" {
  alarm_name          = "${local.name}-storage-events-dead-letters"
  alarm_description   = "Storage notifications the bridge could not deliver to Kafka (the reconciliation pass queues their jobs late)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.storage_events_dlq.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}

resource "aws_cloudwatch_metric_alarm" "storage_events_backlog" {
  alarm_name          = "${local.name}-storage-events-backlog"
  alarm_description   = "The oldest storage notification waits over 5 minutes: the bridge or Kafka is down, uploads wait for their jobs."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = aws_sqs_queue.storage_events.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 300
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
}
