#!/usr/bin/env python3
"""moto_server for the tests (same arguments), with one fix to its request signing check.

moto 5.2.1 with authentication on (see s3_admin.py iam-setup) rebuilds each request's
canonical query string from a URL whose query is already percent-decoded, so a query value
holding '/' (ListObjectsV2 prefix=repo/keys/, what ocvault and boto3 send as %2F) never
matches the client's SigV4 signature: SignatureDoesNotMatch, answered 403. Re-encoding the
query the way SigV4 prescribes (RFC 3986 unreserved characters kept) before moto computes
its signature fixes that. Without authentication the check never runs.
"""

import sys
from urllib.parse import quote, unquote

from moto.iam import access_control
from moto.server import main

_create_aws_request = access_control.IAMRequestBase._create_aws_request


def _sigv4_query(query):
    pairs = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        pairs.append(quote(unquote(key), safe="-_.~") + sep + quote(unquote(value), safe="-_.~"))
    return "&".join(pairs)


def _create_aws_request_with_encoded_query(self):
    if "?" in self._path:
        path, query = self._path.split("?", 1)
        self._path = path + "?" + _sigv4_query(query)
    return _create_aws_request(self)


access_control.IAMRequestBase._create_aws_request = _create_aws_request_with_encoded_query

if __name__ == "__main__":
    sys.exit(main())
