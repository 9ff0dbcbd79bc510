#!/usr/bin/env python3
"""A GitHub REST API test double for scalehook's tests, on loopback.

Every request is checked against GitHub's published OpenAPI description (the
@octokit/openapi package, pinned in mk/github.mk): the method and path template must
exist, path and query parameters and request bodies must validate against their schemas
(request bodies strictly: a property the schema does not name is a violation too), the
headers GitHub asks for must be there, and the credentials must be the right kind (the
App's RS256 JWT, verified with the App's public key, for /app/*; an installation token it
issued otherwise). Every answer it sends is validated against the same description
before it goes out. A failed check is recorded as a violation (the Rust side fails the
test) and answered with 400 (a request) or 500 (an answer).

Only the endpoints scalehook uses are implemented; state lives in memory and is driven
through /_double/* (not part of GitHub's API; never validated).

Usage: github_double.py HOST PORT --spec FILE --app-key PEM --app-id N --installation-id N
       [--prefix /api/v3]
The bound address is printed as one line, `listening http://HOST:PORT`, on stdout. The
process exits when its stdin closes (the test process ended).
"""

import argparse
import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_URI = "urn:github-openapi"
API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"
# Statuses GitHub answers on any endpoint whether or not the description lists them.
GENERIC_ERRORS = {401, 403, 404, 429, 500, 502, 503}


# ---------------------------------------------------------------- the description


def to_json_schema(node):
    """OpenAPI 3.0 schema objects -> JSON Schema (draft 4): `nullable: true` becomes a
    union with null. Works in place over the whole description."""
    if isinstance(node, dict):
        for v in node.values():
            to_json_schema(v)
        if node.get("nullable") is True:
            del node["nullable"]
            t = node.get("type")
            if isinstance(t, str):
                node["type"] = [t, "null"]
                if "enum" in node and None not in node["enum"]:
                    node["enum"] = node["enum"] + [None]
            elif t is None:
                inner = {k: node.pop(k) for k in list(node.keys()) if not k.startswith("x-")}
                node["anyOf"] = [inner, {"type": "null"}]
    elif isinstance(node, list):
        for v in node:
            to_json_schema(v)


class Spec:
    def __init__(self, path):
        with open(path, "rb") as f:
            self.doc = json.load(f)
        to_json_schema(self.doc)
        self.registry = Registry().with_resource(
            SPEC_URI, Resource.from_contents(self.doc, default_specification=DRAFT4)
        )
        self.routes = []
        for template, item in self.doc["paths"].items():
            parts = re.split(r"(\{[^}]+\})", template)
            rx = "".join(
                "(?P<%s>[^/]+)" % p[1:-1].replace("-", "_") if p.startswith("{") else re.escape(p)
                for p in parts
            )
            literal = sum(len(p) for p in parts if not p.startswith("{"))
            self.routes.append((re.compile("^" + rx + "$"), template, item, literal))
        # The most literal template wins (generate-jitconfig over {runner_id}).
        self.routes.sort(key=lambda r: -r[3])

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            assert ref.startswith("#/"), ref
            cur = self.doc
            for seg in ref[2:].split("/"):
                cur = cur[seg.replace("~1", "/").replace("~0", "~")]
            node = cur
        return node

    def find(self, method, path):
        """(template, operation, path params) or an error text."""
        known_path = False
        for rx, template, item, _ in self.routes:
            m = rx.match(path)
            if not m:
                continue
            known_path = True
            op = item.get(method.lower())
            if op is not None:
                params = {}
                names = re.findall(r"\{([^}]+)\}", template)
                for name in names:
                    params[name] = urllib.parse.unquote(m.group(name.replace("-", "_")))
                return template, op, params, item
        if known_path:
            return "%s is not an operation of %s in the description" % (method, path)
        return "no path template of the description matches %s" % path

    def errors(self, schema, value):
        validator = jsonschema.Draft4Validator(schema, registry=self.registry)
        return ["%s at %s" % (e.message[:300], "/".join(str(p) for p in e.absolute_path) or "(root)")
                for e in validator.iter_errors(value)]

    def schema_ref(self, node):
        """A schema node of the description as a validatable schema (refs into the doc)."""
        if isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
            return {"$ref": SPEC_URI + node["$ref"]}
        # Inline schema: rewrite its local refs to point into the document.
        text = json.dumps(node).replace('"$ref": "#/', '"$ref": "%s#/' % SPEC_URI)
        return json.loads(text)


def coerce(value, schema):
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    try:
        if t == "integer":
            if not re.fullmatch(r"-?\d+", value):
                return value
            return int(value)
        if t == "number":
            return float(value)
        if t == "boolean":
            return {"true": True, "false": False}.get(value, value)
    except ValueError:
        return value
    return value


# ---------------------------------------------------------------- RS256 without a library


def der_read(buf, i):
    tag = buf[i]
    i += 1
    ln = buf[i]
    i += 1
    if ln & 0x80:
        n = ln & 0x7F
        ln = int.from_bytes(buf[i:i + n], "big")
        i += n
    return tag, buf[i:i + ln], i + ln


def rsa_public_from_pem(text):
    """(n, e) of a PKCS#1 or PKCS#8 RSA private key in PEM."""
    body = "".join(l for l in text.strip().splitlines() if not l.startswith("-----"))
    der = base64.b64decode(body)
    tag, seq, _ = der_read(der, 0)
    tag, ver, i = der_read(seq, 0)
    if seq[i] == 0x30:  # PKCS#8: AlgorithmIdentifier, then OCTET STRING with PKCS#1
        _, _, i = der_read(seq, i)
        _, inner, _ = der_read(seq, i)
        _, seq, _ = der_read(inner, 0)
        _, ver, i = der_read(seq, 0)
    _, n, i = der_read(seq, i)
    _, e, i = der_read(seq, i)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def rs256_ok(n, e, message, signature):
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    em = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
    return hmac.compare_digest(em, expected)


def b64url_decode(s):
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise ValueError("not base64url without padding")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


# ---------------------------------------------------------------- state


def now_iso(t=None):
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class State:
    def __init__(self, args):
        self.lock = threading.RLock()
        self.app_id = args.app_id
        self.installation_id = args.installation_id
        self.public = rsa_public_from_pem(open(args.app_key).read())
        self.next_id = 1000
        self.runners = {}  # id -> runner (GitHub's shape) + "_scope"
        self.jobs = {}  # (owner/repo lower, id) -> job
        self.deliveries = []  # newest last; each: item + "_body", "_headers"
        self.tokens = {}  # token -> expires (unix)
        self.token_lifetime = 3600
        self.webhook = None  # (url, secret)
        self.limit = 5000
        self.remaining = 5000
        self.reset = int(time.time()) + 3600
        self.throttle = []  # pending forced answers: {"status", "retry_after", "remaining0", "reset_in"}
        self.fail_next = []  # pending forced 5xx
        self.log = []
        self.violations = []
        self.latency = 0.0  # seconds added before every API answer (benchmarks)
        self.groups = {1: "Default"}  # runner group id -> name
        self.hidden = set()  # repositories (lower case owner/name) outside the installation
        # What installation tokens may do (app-permissions); hook endpoints check theirs.
        self.permissions = {"organization_self_hosted_runners": "write", "administration": "write",
                            "actions": "read", "organization_hooks": "write", "repository_hooks": "write"}

    def new_id(self):
        with self.lock:
            self.next_id += 1
            return self.next_id


STATE = None
SPEC = None
PREFIX = ""


def runner_view(r):
    return {k: v for k, v in r.items() if not k.startswith("_")}


def error_body(message, status=None):
    body = {"message": message, "documentation_url": "https://docs.github.com/rest"}
    if status is not None:
        body["status"] = str(status)
    return body


# ---------------------------------------------------------------- handler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "github-double"

    def log_message(self, fmt, *args):
        pass

    # -- plumbing

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body=None, headers=None, check=None):
        """check: (operation, status) to validate the answer against."""
        data = b""
        if check is not None:
            problems = self.check_response(check[0], status, body)
            if problems:
                self.violation("answer %s %s: %s" % (status, self.path, "; ".join(problems)))
                status, body = 500, error_body("double: invalid answer: " + "; ".join(problems))
        if body is not None:
            data = json.dumps(body).encode()
        # The request log shows the status before the client can read the answer: a test
        # that inspects the log right after a call must not see 0.
        entry = getattr(self, "entry", None)
        if entry is not None:
            entry["status"] = status
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if data:
            self.wfile.write(data)
        return status

    def violation(self, text):
        with STATE.lock:
            STATE.violations.append(text)
        print("github-double: VIOLATION: " + text, file=sys.stderr, flush=True)

    def check_response(self, op, status, body):
        responses = op.get("responses", {})
        spec = responses.get(str(status))
        if spec is None:
            if status in GENERIC_ERRORS:
                spec = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/basic-error"}}}}
            else:
                return ["status %s is not an answer of %s" % (status, op.get("operationId"))]
        spec = SPEC.resolve(spec)
        content = spec.get("content")
        if not content:
            return [] if body is None else ["status %s has no body in the description" % status]
        media = content.get("application/json")
        if media is None or "schema" not in media:
            return []
        return SPEC.errors(SPEC.schema_ref(media["schema"]), body)

    # -- the request

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        raw = self.body()
        url = urllib.parse.urlsplit(self.path)
        self.entry = None
        if url.path.startswith("/_double/"):
            return self.admin(method, url, raw)
        entry = {"method": method, "path": url.path, "query": url.query, "status": 0,
                 "auth": "none", "operation": None, "violations": []}
        with STATE.lock:
            STATE.log.append(entry)
        self.entry = entry
        try:
            status = self.api(method, url, raw, entry)
        except Exception as e:  # the double's own bug: fail the test, loudly
            self.violation("double error on %s %s: %r" % (method, self.path, e))
            status = self.send(500, error_body("double: internal error"))
        entry["status"] = status

    def api(self, method, url, raw, entry):
        problems = entry["violations"]
        path = url.path
        if PREFIX:
            if not path.startswith(PREFIX + "/"):
                problems.append("path %s is outside the API prefix %s" % (path, PREFIX))
                return self.reject(problems)
            path = path[len(PREFIX):]
        found = SPEC.find(method, path)
        if isinstance(found, str):
            problems.append(found)
            return self.reject(problems)
        template, op, params, item = found
        entry["operation"] = op.get("operationId")
        # headers GitHub asks every client for
        if self.headers.get("Accept") != ACCEPT:
            problems.append("Accept must be %s (is %r)" % (ACCEPT, self.headers.get("Accept")))
        if self.headers.get("X-GitHub-Api-Version") != API_VERSION:
            problems.append("X-GitHub-Api-Version must be %s" % API_VERSION)
        if not self.headers.get("User-Agent"):
            problems.append("User-Agent is required by GitHub")
        # parameters
        declared = {}
        for p in item.get("parameters", []) + op.get("parameters", []):
            p = SPEC.resolve(p)
            declared[(p["in"], p["name"])] = p
        for name, value in params.items():
            p = declared.get(("path", name))
            if p is None:
                problems.append("path parameter %s is not declared" % name)
                continue
            for e in SPEC.errors(SPEC.schema_ref(p["schema"]), coerce(value, p["schema"])):
                problems.append("path parameter %s=%r: %s" % (name, value, e))
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        for name, values in query.items():
            p = declared.get(("query", name))
            if p is None:
                problems.append("query parameter %s is not a parameter of %s" % (name, op.get("operationId")))
                continue
            if len(values) > 1:
                problems.append("query parameter %s given %d times" % (name, len(values)))
            for e in SPEC.errors(SPEC.schema_ref(p["schema"]), coerce(values[0], SPEC.resolve(p["schema"]))):
                problems.append("query parameter %s=%r: %s" % (name, values[0], e))
        for (where, name), p in declared.items():
            if where == "query" and p.get("required") and name not in query:
                problems.append("required query parameter %s is missing" % name)
        # body
        body = None
        rb = SPEC.resolve(op.get("requestBody")) if op.get("requestBody") else None
        if raw:
            if rb is None:
                problems.append("%s takes no request body" % op.get("operationId"))
            else:
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype != "application/json":
                    problems.append("Content-Type must be application/json (is %r)" % ctype)
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    problems.append("request body is not JSON: %s" % e)
                else:
                    schema = rb["content"]["application/json"]["schema"]
                    problems.extend("request body: " + e for e in SPEC.errors(SPEC.schema_ref(schema), body))
                    resolved = SPEC.resolve(schema)
                    if isinstance(body, dict) and "properties" in resolved:
                        for k in body:
                            if k not in resolved["properties"]:
                                problems.append("request body: property %r is not in the schema" % k)
        elif rb is not None and rb.get("required"):
            problems.append("%s requires a request body" % op.get("operationId"))
        # credentials
        auth = self.headers.get("Authorization") or ""
        app_call = template.startswith("/app/")
        if app_call:
            ok, why = self.check_jwt(auth)
            entry["auth"] = "jwt"
        else:
            ok, why = self.check_token(auth)
            entry["auth"] = "installation"
        if problems:
            return self.reject(problems)
        if not ok:
            return self.send(401, error_body("Bad credentials: " + why, 401), self.rate_headers(), (op, 401))
        if STATE.latency:
            time.sleep(STATE.latency)
        need = HOOK_PERMISSIONS.get(op.get("operationId"))
        if need is not None:
            perm, level = need
            have = STATE.permissions.get(perm)
            if have is None or (level == "write" and have != "write"):
                return self.send(403, error_body("Resource not accessible by integration", 403), self.rate_headers(), (op, 403))
        # forced throttling / failures
        forced = self.forced(op)
        if forced is not None:
            return forced
        handler = ROUTES.get(op.get("operationId"))
        if handler is None:
            problems.append("%s is in the description but the double does not implement it" % op.get("operationId"))
            return self.reject(problems)
        status, out, extra = handler(self, params, query, body)
        headers = self.rate_headers()
        headers.update(extra or {})
        return self.send(status, out, headers, (op, status))

    def reject(self, problems):
        self.violation("request %s %s: %s" % (self.command, self.path, "; ".join(problems)))
        return self.send(400, error_body("double: request does not match GitHub's description: " + "; ".join(problems)))

    def check_jwt(self, auth):
        if not auth.startswith("Bearer "):
            return False, "the App endpoints take `Authorization: Bearer <JWT>`"
        parts = auth[7:].split(".")
        if len(parts) != 3:
            return False, "not a JWT (an installation token on an App endpoint?)"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except ValueError as e:
            return False, "malformed JWT: %s" % e
        if header.get("alg") != "RS256":
            return False, "JWT alg must be RS256"
        n, e = STATE.public
        if not rs256_ok(n, e, (parts[0] + "." + parts[1]).encode(), sig):
            return False, "JWT signature does not verify with the App's public key"
        now = time.time()
        iat, exp, iss = claims.get("iat"), claims.get("exp"), claims.get("iss")
        if not isinstance(iat, int) or not isinstance(exp, int):
            return False, "iat and exp must be integers"
        if str(iss) != str(STATE.app_id):
            return False, "iss must be the App id"
        if iat > now + 60:
            return False, "iat is in the future"
        if exp <= now:
            return False, "JWT expired"
        if exp - iat > 600:
            return False, "exp is more than 10 minutes after iat"
        return True, ""

    def check_token(self, auth):
        for scheme in ("Bearer ", "token "):
            if auth.startswith(scheme):
                token = auth[len(scheme):]
                break
        else:
            return False, "no installation token"
        with STATE.lock:
            exp = STATE.tokens.get(token)
        if exp is None:
            return False, "unknown or revoked token"
        if exp <= time.time():
            return False, "token expired"
        return True, ""

    def rate_headers(self):
        with STATE.lock:
            if time.time() >= STATE.reset:
                STATE.remaining = STATE.limit
                STATE.reset = int(time.time()) + 3600
            STATE.remaining = max(0, STATE.remaining - 1)
            return {
                "x-ratelimit-limit": str(STATE.limit),
                "x-ratelimit-remaining": str(STATE.remaining),
                "x-ratelimit-used": str(STATE.limit - STATE.remaining),
                "x-ratelimit-reset": str(STATE.reset),
                "x-ratelimit-resource": "core",
            }

    def forced(self, op):
        with STATE.lock:
            t = STATE.throttle.pop(0) if STATE.throttle else None
            f = STATE.fail_next.pop(0) if (t is None and STATE.fail_next) else None
        if t is not None:
            headers = self.rate_headers()
            if t.get("retry_after") is not None:
                headers["retry-after"] = str(t["retry_after"])
            if t.get("remaining0"):
                headers["x-ratelimit-remaining"] = "0"
                headers["x-ratelimit-reset"] = str(int(time.time()) + int(t.get("reset_in", 60)))
            status = int(t.get("status", 403))
            msg = t.get("message") or ("API rate limit exceeded" if t.get("remaining0") else "You have exceeded a secondary rate limit.")
            return self.send(status, error_body(msg, status), headers, (op, status))
        if f is not None:
            return self.send(int(f), error_body("double: forced failure", f), self.rate_headers(), (op, int(f)))
        return None

    # -- /_double/* : the test's controls

    def admin(self, method, url, raw):
        try:
            arg = json.loads(raw) if raw else {}
            out = admin(method, url.path[len("/_double/"):], arg)
        except KeyError as e:
            return self.send(404, {"error": "no such %s" % e})
        except Exception as e:  # a test's mistake: tell it
            return self.send(400, {"error": repr(e)})
        return self.send(200, out)


# ---------------------------------------------------------------- the endpoints


def scope_of(params):
    if "org" in params:
        return "org:" + params["org"].lower()
    return "repo:%s/%s" % (params["owner"].lower(), params["repo"].lower())


def paginate(h, items, query, key=None):
    per_page = min(int(query.get("per_page", ["30"])[0]), 100)  # GitHub caps at 100
    page = max(int(query.get("page", ["1"])[0]), 1)
    chunk = items[(page - 1) * per_page: page * per_page]
    links = []
    last = max((len(items) + per_page - 1) // per_page, 1)
    base = "http://%s:%d%s" % (h.server.server_address[0], h.server.server_address[1], urllib.parse.urlsplit(h.path).path)

    def link(p, rel):
        q = {k: v[0] for k, v in query.items()}
        q["page"] = str(p)
        return '<%s?%s>; rel="%s"' % (base, urllib.parse.urlencode(q), rel)

    if page < last:
        links.append(link(page + 1, "next"))
        links.append(link(last, "last"))
    if page > 1:
        links.append(link(1, "first"))
        links.append(link(page - 1, "prev"))
    return chunk, ({"Link": ", ".join(links)} if links else {})


def list_runners(h, params, query, body):
    scope = scope_of(params)
    with STATE.lock:
        rs = [runner_view(r) for r in sorted(STATE.runners.values(), key=lambda r: r["id"]) if r["_scope"] == scope]
    if "runner_group_id" in params:
        gid = int(params["runner_group_id"])
        if gid not in STATE.groups:
            return 404, error_body("Not Found", 404), {}
        rs = [r for r in rs if r["runner_group_id"] == gid]
    if "name" in query:
        # GitHub's `name` filter is an exact match (case-insensitive, like runner names).
        rs = [r for r in rs if r["name"].lower() == query["name"][0].lower()]
    chunk, headers = paginate(h, rs, query)
    return 200, {"total_count": len(rs), "runners": chunk}, headers


def get_runner(h, params, query, body):
    with STATE.lock:
        r = STATE.runners.get(int(params["runner_id"]))
    if r is None or r["_scope"] != scope_of(params):
        return 404, error_body("Not Found", 404), {}
    return 200, runner_view(r), {}


def list_runner_groups(h, params, query, body):
    org = params["org"].lower()
    with STATE.lock:
        groups = sorted(STATE.groups.items())
    items = [{"id": gid, "name": name, "visibility": "all", "default": gid == 1,
              "runners_url": "https://api.github.com/orgs/%s/actions/runner-groups/%d/runners" % (org, gid),
              "inherited": False, "allows_public_repositories": False,
              "restricted_to_workflows": False, "selected_workflows": []}
             for gid, name in groups]
    chunk, headers = paginate(h, items, query)
    return 200, {"total_count": len(items), "runner_groups": chunk}, headers


def get_repository(h, params, query, body):
    full = "%s/%s" % (params["owner"], params["repo"])
    with STATE.lock:
        hidden = full.lower() in STATE.hidden
    if hidden:
        return 404, error_body("Not Found", 404), {}
    return 200, repository_view(params["owner"], params["repo"]), {}


def repository_view(owner, repo):
    """The description's own example of a repository, renamed. The example lacks `language`,
    which the schema requires (checked: it fails its own schema), and carries the fork-only
    `parent`/`source`: both fixed here."""
    op = SPEC.doc["paths"]["/repos/{owner}/{repo}"]["get"]
    media = SPEC.resolve(op["responses"]["200"])["content"]["application/json"]
    example = copy.deepcopy(SPEC.resolve(next(iter(media["examples"].values())))["value"])
    example["name"] = repo
    example["full_name"] = "%s/%s" % (owner, repo)
    example["owner"]["login"] = owner
    example.setdefault("language", None)
    example.pop("parent", None)
    example.pop("source", None)
    return example


def delete_runner(h, params, query, body):
    rid = int(params["runner_id"])
    with STATE.lock:
        r = STATE.runners.get(rid)
        if r is None or r["_scope"] != scope_of(params):
            return 404, error_body("Not Found", 404), {}
        if r["busy"]:
            return 422, {"message": 'Bad request - Runner "%s" is still running a job' % r["name"],
                         "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"}, {}
        del STATE.runners[rid]
    return 204, None, {}


def jitconfig(h, params, query, body):
    scope = scope_of(params)
    with STATE.lock:
        if any(r["name"] == body["name"] and r["_scope"] == scope for r in STATE.runners.values()):
            return 409, error_body("Already exists - A runner with the name %s already exists." % body["name"], 409), {}
        rid = STATE.new_id()
        r = make_runner(rid, body["name"], "offline", False, body["labels"], scope, body["runner_group_id"], True)
        STATE.runners[rid] = r
        cfg = base64.b64encode(json.dumps({"runner_id": rid, "name": body["name"], "double": True}).encode()).decode()
        return 201, {"runner": runner_view(r), "encoded_jit_config": cfg}, {}


def get_job(h, params, query, body):
    key = ("%s/%s" % (params["owner"], params["repo"])).lower(), int(params["job_id"])
    with STATE.lock:
        job = STATE.jobs.get(key)
    if job is None:
        return 404, error_body("Not Found", 404), {}
    return 200, job, {}


def access_token(h, params, query, body):
    if int(params["installation_id"]) != STATE.installation_id:
        return 404, error_body("Not Found", 404), {}
    token = "ghs_" + secrets.token_hex(18)
    with STATE.lock:
        exp = time.time() + STATE.token_lifetime
        STATE.tokens[token] = exp
    return 201, {"token": token, "expires_at": now_iso(exp),
                 "permissions": dict(STATE.permissions),
                 "repository_selection": "all"}, {}


def hook_of(params):
    """Which webhook an endpoint's path names: app, org:<org>:<id> or repo:<owner/name>:<id>."""
    if "hook_id" not in params:
        return "app"
    if "org" in params:
        return "org:%s:%s" % (params["org"].lower(), params["hook_id"])
    return "repo:%s/%s:%s" % (params["owner"].lower(), params["repo"].lower(), params["hook_id"])


def list_deliveries(h, params, query, body):
    per_page = min(int(query.get("per_page", ["30"])[0]), 100)
    status = query.get("status", [None])[0]
    hook = hook_of(params)
    with STATE.lock:
        items = [d for d in reversed(STATE.deliveries) if d["_hook"] == hook]  # newest first
    if status == "success":
        items = [d for d in items if 200 <= d["status_code"] <= 399]
    elif status == "failure":
        items = [d for d in items if 400 <= d["status_code"] <= 599]
    start = 0
    if "cursor" in query:
        c = query["cursor"][0]
        idx = [i for i, d in enumerate(items) if str(d["id"]) == c]
        start = idx[0] if idx else len(items)
    chunk = items[start:start + per_page]
    headers = {}
    if start + per_page < len(items):
        nxt = items[start + per_page]["id"]
        base = "http://%s:%d%s" % (h.server.server_address[0], h.server.server_address[1], urllib.parse.urlsplit(h.path).path)
        q = {"per_page": str(per_page), "cursor": str(nxt)}
        if status:
            q["status"] = status
        headers["Link"] = '<%s?%s>; rel="next"' % (base, urllib.parse.urlencode(q))
    return 200, [{k: v for k, v in d.items() if not k.startswith("_")} for d in chunk], headers


def redeliver(h, params, query, body):
    did = int(params["delivery_id"])
    hook = hook_of(params)
    with STATE.lock:
        d = next((x for x in STATE.deliveries if x["id"] == did and x["_hook"] == hook), None)
        hook = STATE.webhook
    if d is None:
        return 404, error_body("Not Found", 404), {}
    if hook is None:
        return 422, {"message": "double: no webhook URL set (GitHubDouble::set_webhook)",
                     "documentation_url": "https://docs.github.com/rest"}, {}
    threading.Thread(target=post_delivery, args=(d, hook, True), daemon=True).start()
    return 202, {}, {}


ROUTES = {
    "actions/list-self-hosted-runners-for-org": list_runners,
    "actions/list-self-hosted-runners-for-repo": list_runners,
    "actions/delete-self-hosted-runner-from-org": delete_runner,
    "actions/delete-self-hosted-runner-from-repo": delete_runner,
    "actions/generate-runner-jitconfig-for-org": jitconfig,
    "actions/generate-runner-jitconfig-for-repo": jitconfig,
    "actions/get-job-for-workflow-run": get_job,
    "apps/create-installation-access-token": access_token,
    "apps/list-webhook-deliveries": list_deliveries,
    "apps/redeliver-webhook-delivery": redeliver,
    "orgs/list-webhook-deliveries": list_deliveries,
    "orgs/redeliver-webhook-delivery": redeliver,
    "repos/list-webhook-deliveries": list_deliveries,
    "repos/redeliver-webhook-delivery": redeliver,
    "actions/get-self-hosted-runner-for-org": get_runner,
    "actions/get-self-hosted-runner-for-repo": get_runner,
    "actions/list-self-hosted-runners-in-group-for-org": list_runners,
    "actions/list-self-hosted-runner-groups-for-org": list_runner_groups,
    "repos/get": get_repository,
}

# The installation permission each hook endpoint needs (GitHub's "Webhooks" organization or
# repository permission): read to list deliveries, write to redeliver.
HOOK_PERMISSIONS = {
    "orgs/list-webhook-deliveries": ("organization_hooks", "read"),
    "orgs/redeliver-webhook-delivery": ("organization_hooks", "write"),
    "repos/list-webhook-deliveries": ("repository_hooks", "read"),
    "repos/redeliver-webhook-delivery": ("repository_hooks", "write"),
}


def post_delivery(d, hook, redelivery):
    """Sends a stored delivery's body to the webhook URL as GitHub does, and records the
    attempt as a new delivery (same guid)."""
    url, secret = hook
    body = d["_body"]
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/double",
        "X-GitHub-Event": d["event"],
        "X-GitHub-Delivery": d["guid"],
        "X-GitHub-Hook-ID": d["_hook"].rsplit(":", 1)[-1] if d["_hook"] != "app" else "424242",
        "X-GitHub-Hook-Installation-Target-Type": {"app": "integration", "org": "organization", "repo": "repository"}[d["_hook"].split(":")[0]],
        "X-GitHub-Hook-Installation-Target-ID": str(STATE.app_id),
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    start = time.time()
    try:
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            code, status = resp.status, "OK"
    except urllib.error.HTTPError as e:
        code, status = e.code, "Invalid HTTP Response: %d" % e.code
    except Exception:
        code, status = 0, "failed to connect to host"
    item = dict(d)
    item.update({"id": STATE.new_id(), "delivered_at": now_iso(), "redelivery": redelivery,
                 "duration": round(time.time() - start, 3), "status": status, "status_code": code})
    with STATE.lock:
        STATE.deliveries.append(item)


def make_runner(rid, name, status, busy, labels, scope, group=1, ephemeral=False):
    return {
        "id": rid, "name": name, "os": "linux", "status": status, "busy": busy,
        "runner_group_id": group, "ephemeral": ephemeral,
        "labels": [{"id": i + 1, "name": l, "type": "read-only" if l in ("self-hosted", "linux", "x64") else "custom"}
                   for i, l in enumerate(labels)],
        "_scope": scope,
    }


def admin(method, what, arg):
    s = STATE
    with s.lock:
        if what == "runners" and method == "POST":
            rid = s.new_id()
            scope = ("org:" + arg["org"].lower()) if arg.get("org") else "repo:" + arg["repo"].lower()
            s.runners[rid] = make_runner(rid, arg["name"], arg.get("status", "online"), bool(arg.get("busy", False)),
                                         arg.get("labels") or ["self-hosted", "linux", "x64"], scope,
                                         int(arg.get("group", 1)))
            return {"id": rid}
        if what == "runners-bulk" and method == "POST":
            scope = ("org:" + arg["org"].lower()) if arg.get("org") else "repo:" + arg["repo"].lower()
            ids = []
            for name in arg["names"]:
                rid = s.new_id()
                s.runners[rid] = make_runner(rid, name, "online", False, ["self-hosted", "linux", "x64"], scope,
                                             int(arg.get("group", 1)))
                ids.append(rid)
            return {"ids": ids}
        if what == "runner-groups" and method == "POST":
            gid = max(s.groups) + 1
            s.groups[gid] = arg["name"]
            return {"id": gid}
        if what == "repositories" and method == "POST":
            for r in arg.get("hide", []):
                s.hidden.add(r.lower())
            return {}
        if what == "permissions" and method == "POST":
            s.permissions = dict(arg["permissions"])
            return {}
        if what == "latency" and method == "POST":
            s.latency = float(arg.get("ms", 0)) / 1000.0
            return {}
        if what == "runners" and method == "GET":
            return [dict(runner_view(r), scope=r["_scope"]) for r in sorted(s.runners.values(), key=lambda r: r["id"])]
        if what == "runner" and method == "PATCH":
            r = s.runners[arg["id"]] if "id" in arg else next(x for x in s.runners.values() if x["name"] == arg["name"])
            if "busy" in arg:
                r["busy"] = bool(arg["busy"])
            if "status" in arg:
                r["status"] = arg["status"]
            if arg.get("remove"):
                del s.runners[r["id"]]
            return {"id": r["id"]}
        if what == "jobs" and method == "POST":
            owner, repo = arg["repository"].split("/")
            jid = int(arg["id"])
            st = arg.get("status", "queued")
            done = st == "completed"
            t = now_iso()
            s.jobs[(arg["repository"].lower(), jid)] = {
                "id": jid, "node_id": "CR_double%d" % jid, "run_id": jid * 10, "run_attempt": 1,
                "run_url": "https://api.github.com/repos/%s/%s/actions/runs/%d" % (owner, repo, jid * 10),
                "head_sha": "0" * 40, "workflow_name": "CI", "head_branch": "main", "name": "build",
                "url": "https://api.github.com/repos/%s/%s/actions/jobs/%d" % (owner, repo, jid),
                "html_url": "https://github.com/%s/%s/actions/runs/%d/job/%d" % (owner, repo, jid * 10, jid),
                "status": st, "conclusion": arg.get("conclusion", "success") if done else None,
                "started_at": t, "completed_at": t if done else None,
                "check_run_url": "https://api.github.com/repos/%s/%s/check-runs/%d" % (owner, repo, jid),
                "labels": arg.get("labels", ["self-hosted"]), "steps": [],
                "runner_id": arg.get("runner_id"), "runner_name": arg.get("runner_name"),
                "runner_group_id": 1 if arg.get("runner_name") else None,
                "runner_group_name": "Default" if arg.get("runner_name") else None,
                "created_at": t,
            }
            return {}
        if what == "deliveries" and method == "POST":
            body = arg["body"].encode() if isinstance(arg["body"], str) else json.dumps(arg["body"]).encode()
            d = {
                "id": s.new_id(), "guid": arg.get("guid") or "%08x-0000-11ee-8000-%012x" % (s.next_id, s.next_id),
                "delivered_at": now_iso(arg.get("delivered_at")), "redelivery": False, "duration": 10.0,
                "status": arg.get("status", "Timed out" if arg.get("status_code", 0) == 0 else "Invalid HTTP Response"),
                "status_code": int(arg.get("status_code", 0)), "event": arg.get("event", "workflow_job"),
                "action": arg.get("action"), "installation_id": s.installation_id, "repository_id": 1,
                "throttled_at": None, "_body": body, "_hook": arg.get("hook", "app"),
            }
            s.deliveries.append(d)
            return {"id": d["id"], "guid": d["guid"]}
        if what == "deliveries" and method == "GET":
            return [dict({k: v for k, v in d.items() if not k.startswith("_")}, body=d["_body"].decode())
                    for d in s.deliveries]
        if what == "webhook" and method == "POST":
            s.webhook = (arg["url"], arg["secret"])
            return {}
        if what == "rate-limit" and method == "POST":
            for _ in range(int(arg.get("count", 1))):
                s.throttle.append(arg)
            return {}
        if what == "fail" and method == "POST":
            s.fail_next.extend([int(arg.get("status", 502))] * int(arg.get("count", 1)))
            return {}
        if what == "tokens" and method == "POST":
            if arg.get("revoke"):
                s.tokens.clear()
            if arg.get("expire"):
                for k in s.tokens:
                    s.tokens[k] = time.time() - 1
            if "lifetime" in arg:
                s.token_lifetime = int(arg["lifetime"])
            return {"issued": len(s.tokens)}
        if what == "log" and method == "GET":
            return copy.deepcopy(s.log)
        if what == "violations" and method == "GET":
            return list(s.violations)
        if what == "violations" and method == "DELETE":
            s.violations.clear()
            return {}
    raise KeyError(what)


def main():
    global STATE, SPEC, PREFIX
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--app-key", required=True)
    ap.add_argument("--app-id", type=int, required=True)
    ap.add_argument("--installation-id", type=int, required=True)
    ap.add_argument("--prefix", default="")
    args = ap.parse_args()
    PREFIX = args.prefix.rstrip("/")
    SPEC = Spec(args.spec)
    STATE = State(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening http://%s:%d" % server.server_address[:2], flush=True)
    # Ends with the test process: its end closes our stdin.
    try:
        sys.stdin.read()
    except Exception:
        pass


if __name__ == "__main__":
    main()
