"""Algorithm 3: hash over the Request-URI.

Kamailio ``ds_hash_ruri``: ``get_uri_hash_keys`` gives key1 = user and key2 = host, plus ``:port``
when the port is present and not the scheme default ("we want: user@host:port if port !=5060,
user@host if port==5060, user if the user flag is set"), hashed with ``ds_get_hash(key1, key2)``.
URI parameters (``;transport=``...) and the display name do not matter.
"""

from __future__ import annotations

from ..hashing import hash_uri
from .base import AlgorithmBase, SelectionKey, register_algorithm


@register_algorithm(3, "hash_request_uri")
class HashRequestUri(AlgorithmBase):
    """``ds_select_dst(set, "3")``."""

    def first_index(self, key: SelectionKey) -> int | None:
        """URI hash; None (selection fails) when the URI is absent or not a SIP URI."""
        return hash_uri(key.ruri, user_only=self.ctx.hash_user_only)
