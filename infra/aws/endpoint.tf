# How GitHub reaches the function. The HMAC signature over the body is the authentication
# (GitHub cannot sign requests with AWS credentials), so both endpoints are public.

# ---- Function URL (default) -------------------------------------------------------------

resource "aws_lambda_function_url" "webhook" {
  #checkov:skip=CKV_AWS_258:GitHub cannot send SigV4-signed requests; every delivery is authenticated by its X-Hub-Signature-256 HMAC, checked in constant time before anything else.
  count              = var.endpoint == "function_url" ? 1 : 0
  function_name      = aws_lambda_function.scalehook.function_name
  authorization_type = "NONE"
  invoke_mode        = "BUFFERED"
}

# No aws_lambda_permission here: with authorization_type NONE the provider (6.28.0 and
# later) adds both statements a public URL needs when it creates the URL,
# FunctionURLAllowPublicAccess (lambda:InvokeFunctionUrl, lambda:FunctionUrlAuthType NONE)
# and FunctionURLAllowInvokeAction (lambda:InvokeFunction, lambda:InvokedViaFunctionUrl).

# ---- API Gateway HTTP API (endpoint = "api_gateway") ------------------------------------
# Adds stage throttling and access logs in front of the same function and payload (2.0).

resource "aws_apigatewayv2_api" "webhook" {
  count         = var.endpoint == "api_gateway" ? 1 : 0
  name          = var.name
  description   = "scalehook GitHub webhook endpoint"
  protocol_type = "HTTP"
  tags          = var.tags
}

resource "aws_apigatewayv2_integration" "webhook" {
  count                  = var.endpoint == "api_gateway" ? 1 : 0
  api_id                 = aws_apigatewayv2_api.webhook[0].id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.scalehook.invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = min(var.timeout_seconds * 1000, 30000)
}

resource "aws_apigatewayv2_route" "webhook" {
  #checkov:skip=CKV_AWS_309:GitHub cannot present AWS or JWT credentials; the delivery's HMAC signature is verified by the function before anything else.
  count              = var.endpoint == "api_gateway" ? 1 : 0
  api_id             = aws_apigatewayv2_api.webhook[0].id
  route_key          = "ANY /webhook"
  target             = "integrations/${aws_apigatewayv2_integration.webhook[0].id}"
  authorization_type = "NONE"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_338:Retention follows log_retention_days (30 by default), like the function's own logs.
  count             = var.endpoint == "api_gateway" ? 1 : 0
  name              = "/aws/apigateway/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "webhook" {
  count       = var.endpoint == "api_gateway" ? 1 : 0
  api_id      = aws_apigatewayv2_api.webhook[0].id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.api_gateway_throttle.rate_limit
    throttling_burst_limit = var.api_gateway_throttle.burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access[0].arn
    format = jsonencode({
      requestId = "$context.requestId"
      ip        = "$context.identity.sourceIp"
      time      = "$context.requestTime"
      route     = "$context.routeKey"
      status    = "$context.status"
      latencyMs = "$context.integrationLatency"
      error     = "$context.integrationErrorMessage"
    })
  }

  tags = var.tags
}

resource "aws_lambda_permission" "api_gateway" {
  count         = var.endpoint == "api_gateway" ? 1 : 0
  statement_id  = "AllowApiGatewayWebhookRoute"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.scalehook.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.webhook[0].execution_arn}/*/*/webhook"
}
