#!/usr/bin/env python3
"""callPagamS2S through panvault's proxy with zeep, a generic SOAP client (issue 15 point 1).

    PANVAULT_KEY=pvk_... REQUESTS_CA_BUNDLE=<vault CA> axerve_zeep.py WSDL ADDRESS < fields.json

WSDL is tests/fixtures/wsdl/WSs2s.wsdl, ADDRESS the vault's proxy URL
(https://HOST/v1/proxy/axerve/gestpay/gestpayws/WSs2s.asmx), stdin the call's fields as a JSON
object ({"shopLogin": ..., "tokenValue": ...}). panvault's key goes in `Authorization: Bearer`
on the requests.Session zeep sends with; the vault's CA comes from REQUESTS_CA_BUNDLE (it
overrides a session's `verify` wherever it is set). Prints GestPayS2S as zeep parsed it: a JSON
object of its leaf elements' texts.
"""

import json
import os
import sys

try:
    import requests
    import zeep
    from zeep.transports import Transport
except ImportError as e:
    sys.exit(f"axerve_zeep.py: {e}: pip install -r tests/requirements.txt")

SERVICE = "{https://ecomms2s.sella.it/}WSs2sSoap"


def leaves(element, out):
    """The texts of `element`'s leaf descendants, by local name."""
    children = list(element)
    if not children:
        out[element.tag.split("}")[-1]] = (element.text or "").strip()
    for child in children:
        leaves(child, out)
    return out


def main():
    wsdl, address = sys.argv[1], sys.argv[2]
    fields = json.load(sys.stdin)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + os.environ["PANVAULT_KEY"]
    client = zeep.Client(wsdl, transport=Transport(session=session))
    service = client.create_service(SERVICE, address)
    result = service.callPagamS2S(**fields)
    # callPagamS2SResult is an XmlNode (mixed content holding any element): zeep hands back
    # that element, GestPayS2S (or, in older versions, an object holding it as `_value_1`).
    gestpay = getattr(result, "_value_1", result)
    if not str(getattr(gestpay, "tag", "")).endswith("GestPayS2S"):
        sys.exit(f"axerve_zeep.py: no GestPayS2S in the answer: {result!r}")
    print(json.dumps(leaves(gestpay, {}), sort_keys=True))


if __name__ == "__main__":
    main()
