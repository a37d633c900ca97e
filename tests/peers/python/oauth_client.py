"""The official Python SDK client's OAuth flow against an MCP server behind mcp-edge: the SDK
meets the 401, reads the Protected Resource Metadata it points at, discovers the authorization
server, gets a token (client_credentials, with RFC 8707's resource) and retries.

usage: python oauth_client.py URL ISSUER MODE URI
Prints JSON: what the resource read returned, twice (the second from mcp-edge's cache).
"""
import asyncio
import json
import sys

import httpx2
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def main(url, issuer, mode, uri):
    storage = MemoryStorage()
    auth = ClientCredentialsOAuthProvider(
        server_url=url, storage=storage, client_id="sdk-client", client_secret="sdk-secret",
        scope="mcp:read", issuer=issuer)
    out = {"reads": []}
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, cache=None) as client:
            for _ in range(2):
                contents = (await client.read_resource(uri)).contents[0]
                out["reads"].append(getattr(contents, "text", None))
    out["token_type"] = storage.tokens.token_type if storage.tokens else None
    print(json.dumps(out))


asyncio.run(main(*sys.argv[1:5]))
