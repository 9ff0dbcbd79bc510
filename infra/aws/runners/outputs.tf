output "asg_name" {
  description = "Name of the Auto Scaling group: the pool's aws_asg in scalehook's configuration."
  value       = aws_autoscaling_group.runners.name
}

output "asg_arn" {
  description = "ARN of the Auto Scaling group."
  value       = aws_autoscaling_group.runners.arn
}

output "instance_role_arn" {
  description = "ARN of the instance role (it can read and delete the instance's own JIT parameter and nothing else)."
  value       = aws_iam_role.instance.arn
}

output "launch_template_id" {
  description = "ID of the launch template."
  value       = aws_launch_template.runner.id
}
