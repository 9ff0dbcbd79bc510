terraform {
  # 1.11: write-only arguments (`value_wo`) keep the webhook secret out of the state, and
  # variable validations may refer to other variables.
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 6.28 added `invoked_via_function_url` to aws_lambda_permission: since October 2025 a
      # public function URL needs lambda:InvokeFunction as well as lambda:InvokeFunctionUrl,
      # and that condition keeps the second grant limited to calls through the URL.
      version = ">= 6.28, < 7.0"
    }
  }
}
