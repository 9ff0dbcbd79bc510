# Edge protection (optional): CloudFront with an AWS WAF web ACL in front of the endpoint.
# AWS WAF attaches to CloudFront, REST APIs, ALBs and a few others, but not to API Gateway
# HTTP APIs nor to Lambda function URLs, so the web ACL goes on a CloudFront distribution
# whose origin is the function URL (or the HTTP API). The web ACL is yours (scope
# CLOUDFRONT, in us-east-1): e.g. a rate-based rule and an allow-list of GitHub's published
# hook addresses (the "hooks" ranges of https://api.github.com/meta).
#
# The origin stays reachable directly: a function URL with auth NONE cannot be limited to
# CloudFront without SigV4 on every POST, which GitHub cannot send. The HMAC signature
# remains the authentication; the web ACL filters and rate-limits what comes through the
# published address.

locals {
  origin_url = (
    var.endpoint == "function_url"
    ? aws_lambda_function_url.webhook[0].function_url
    : "${aws_apigatewayv2_stage.webhook[0].invoke_url}webhook"
  )
  # https://<host>/ (function URL) or https://<host>/webhook (HTTP API $default stage).
  origin_host = split("/", local.origin_url)[2]
  edge        = var.cloudfront_web_acl_arn != null

  webhook_url = local.edge ? (
    var.endpoint == "function_url"
    ? "https://${aws_cloudfront_distribution.edge[0].domain_name}/"
    : "https://${aws_cloudfront_distribution.edge[0].domain_name}/webhook"
  ) : local.origin_url

  # AWS managed policies: no caching, and every viewer header but Host passed on (the
  # function URL answers only to its own host name).
  cache_policy_caching_disabled             = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
  origin_request_all_viewer_except_host_hdr = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
}

resource "aws_cloudfront_distribution" "edge" {
  #checkov:skip=CKV_AWS_86:Access logs need a log bucket outside this module; every delivery is already one log line of the function, and the web ACL has its own logging.
  #checkov:skip=CKV_AWS_174:The default CloudFront certificate (no custom domain) fixes the minimum protocol; viewers are GitHub's webhook senders, which use TLS 1.2+.
  #checkov:skip=CKV_AWS_310:One origin is the whole service: there is no second origin to fail over to.
  #checkov:skip=CKV_AWS_305:No default root object: the distribution serves one webhook path, not a website.
  #checkov:skip=CKV2_AWS_32:No response headers policy: the answers are JSON for GitHub's webhook sender, not pages for browsers.
  #checkov:skip=CKV2_AWS_42:A custom certificate needs a custom domain, which is yours to add; the CloudFront domain serves HTTPS.
  #checkov:skip=CKV2_AWS_47:The web ACL is supplied by the user (cloudfront_web_acl_arn); which managed rule groups it holds is the user's policy.
  #checkov:skip=CKV_AWS_374:Geo restriction would drop GitHub deliveries from regions it sends from; allow-list GitHub's hook ranges in the web ACL instead.
  count           = local.edge ? 1 : 0
  enabled         = true
  comment         = "scalehook webhook (${var.name}) behind AWS WAF"
  price_class     = "PriceClass_100"
  http_version    = "http2"
  is_ipv6_enabled = true
  web_acl_id      = var.cloudfront_web_acl_arn

  origin {
    origin_id   = "webhook"
    domain_name = local.origin_host

    custom_origin_config {
      http_port              = 80
      https_port             = 443
      origin_protocol_policy = "https-only"
      origin_ssl_protocols   = ["TLSv1.2"]
    }
  }

  default_cache_behavior {
    target_origin_id         = "webhook"
    viewer_protocol_policy   = "https-only"
    allowed_methods          = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"]
    cached_methods           = ["GET", "HEAD"]
    cache_policy_id          = local.cache_policy_caching_disabled
    origin_request_policy_id = local.origin_request_all_viewer_except_host_hdr
    compress                 = false
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }

  tags = var.tags
}
