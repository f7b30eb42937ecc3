"""Keeping credentials out of what hicl prints and stores when it talks to a hub.

The token comes from huggingface_hub (HF_TOKEN or the saved login), and a private hub's URL may
carry a user and password (`https://user:pass@host`). Neither may reach a message, the catalog or
a log: messages built from hub replies are scrubbed of every secret in any letter case and in its
URL-encoded form (a server may echo a token back, even as the account's `name`), and the endpoint
is shown and recorded without its user info. A token sent over plain http to another machine can
be read on the way: `plain_http_warning` says so before anything is sent.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"
#: a user name or password shorter than this is not scrubbed from free text (it would mangle
#: ordinary words); the whole `user:pass@` of a URL always is
MIN_SECRET = 6


def endpoint_secrets(endpoint: str) -> list[str]:
    """The user info of `endpoint` as it may appear in text: `user:pass@` and the password."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    found = [userinfo + "@", unquote(userinfo) + "@"]
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    return found


def public_endpoint(endpoint: str) -> str:
    """`endpoint` without user info, as it may be shown and stored."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def scrub(text: str, secrets: list[str | None]) -> str:
    """`text` with every secret masked, whatever its letter case, raw or URL-encoded."""
    variants = set()
    for secret in secrets:
        if secret and (len(secret) >= MIN_SECRET or secret.endswith("@")):
            variants.update({secret, quote(secret, safe=""), quote(secret)})
    for variant in sorted(variants, key=len, reverse=True):
        text = re.sub(re.escape(variant), MASK, text, flags=re.IGNORECASE)
    return text


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_warning(endpoint: str) -> str | None:
    """A warning when the token would travel unencrypted to another machine; None otherwise."""
    parts = urlsplit(endpoint)
    if parts.scheme.lower() != "http" or is_loopback(parts.hostname):
        return None
    return (f"{public_endpoint(endpoint)} is plain http: the token is sent unencrypted to {parts.hostname}, "
            "where anyone on the way can read it; use https unless this network is yours")
