"""An OAuth 2.1 authorization server for the tests of mcp-edge's [route.auth]: it signs real
JWT access tokens with PyJWT + cryptography and publishes its keys as a JWKS.

Usage: auth_server.py PORT

- GET  /jwks.json                                  the published keys (fetches are counted)
- GET  /.well-known/oauth-authorization-server     RFC 8414 metadata (client_credentials)
- POST /token                                      client_credentials grant (client "sdk-client",
                                                   secret "sdk-secret"); aud = the `resource` sent
- POST /mint  {"claims": {...}, "kid", "alg", "key"}  a token as a test wants it:
      alg "RS256" (default) signed with key `kid` (default: the current key);
      alg "none" unsigned; alg "HS256-public": HMAC keyed with the public key's PEM (the
      algorithm-confusion attack); claims merged over sane defaults, null removes one
- POST /rotate {"publish": true}                   a new key, current from now on; published
                                                   at once unless publish is false
- POST /publish {"kid": ...}                       publishes a key made earlier
- POST /fail {"status": 503}                       the JWKS answers this status (0: normal)
- GET  /stats                                      {"jwks_fetches": n, "token_requests": [...]}
"""

import base64
import json
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

PORT = int(sys.argv[1])
ISSUER = f"http://127.0.0.1:{PORT}"
LOCK = threading.Lock()
STATE = {"keys": {}, "published": [], "current": None, "fetches": 0, "token_requests": [], "fail": 0}


def new_key(publish=True):
    kid = f"k{len(STATE['keys']) + 1}"
    STATE["keys"][kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    STATE["current"] = kid
    if publish:
        STATE["published"].append(kid)
    return kid


new_key()


def jwks():
    keys = []
    for kid in STATE["published"]:
        jwk = json.loads(RSAAlgorithm.to_jwk(STATE["keys"][kid].public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        keys.append(jwk)
    return {"keys": keys}


def claims_for(overrides, audience="http://127.0.0.1/mcp"):
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": audience, "sub": "alice", "client_id": "app", "scope": "mcp:read",
              "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(request):
    claims = claims_for(request.get("claims", {}), request.get("aud", "http://127.0.0.1/mcp"))
    kid = request.get("kid", STATE["current"])
    alg = request.get("alg", "RS256")
    if alg == "none":
        header = {"alg": "none", "typ": "JWT"}
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    if alg == "HS256-public":
        # The confusion attack: the public key, as published, used as an HMAC secret.
        public = STATE["keys"][kid].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = {"alg": "HS256", "typ": "JWT", "kid": kid}
        message = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        import hmac
        import hashlib
        tag = hmac.new(public, message.encode(), hashlib.sha256).digest()
        return f"{message}.{b64(tag)}"
    headers = {"kid": kid, "typ": "at+jwt"} if kid else {"typ": "at+jwt"}
    return jwt.encode(claims, STATE["keys"][kid or STATE["current"]], algorithm=alg, headers=headers)


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, document, content_type="application/json"):
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        with LOCK:
            if self.path == "/jwks.json":
                STATE["fetches"] += 1
                if STATE["fail"]:
                    return self.reply(STATE["fail"], {"error": "down"})
                return self.reply(200, jwks())
            if self.path == "/.well-known/oauth-authorization-server":
                return self.reply(200, {
                    "issuer": ISSUER,
                    "token_endpoint": f"{ISSUER}/token",
                    "authorization_endpoint": f"{ISSUER}/authorize",
                    "jwks_uri": f"{ISSUER}/jwks.json",
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["client_credentials", "authorization_code"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "code_challenge_methods_supported": ["S256"],
                })
            if self.path == "/stats":
                return self.reply(200, {"jwks_fetches": STATE["fetches"], "token_requests": STATE["token_requests"]})
        self.reply(404, {"error": "not found"})

    def do_POST(self):
        raw = self.body()
        with LOCK:
            if self.path == "/token":
                return self.token(raw)
            request = json.loads(raw or b"{}")
            if self.path == "/mint":
                return self.reply(200, {"token": mint(request)})
            if self.path == "/rotate":
                return self.reply(200, {"kid": new_key(request.get("publish", True))})
            if self.path == "/publish":
                STATE["published"].append(request["kid"])
                return self.reply(200, {"published": STATE["published"]})
            if self.path == "/fail":
                STATE["fail"] = int(request.get("status", 0))
                return self.reply(200, {"fail": STATE["fail"]})
        self.reply(404, {"error": "not found"})

    def token(self, raw):
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        client, secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            client, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        STATE["token_requests"].append({"grant_type": form.get("grant_type"), "resource": form.get("resource"),
                                        "scope": form.get("scope"), "client_id": client})
        if form.get("grant_type") != "client_credentials" or (client, secret) != ("sdk-client", "sdk-secret"):
            return self.reply(400, {"error": "invalid_client"})
        scope = form.get("scope", "mcp:read")
        token = mint({"aud": form.get("resource"), "claims": {"sub": client, "client_id": client, "scope": scope}})
        self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 600, "scope": scope})


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
