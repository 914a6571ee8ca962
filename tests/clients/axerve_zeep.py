#!/usr/bin/env python3
"""callPagamS2S through panvault's proxy with zeep, a generic SOAP client (issue 15 point 1).

    PANVAULT_KEY=pvk_... REQUESTS_CA_BUNDLE=<vault CA> axerve_zeep.py WSDL ADDRESS [raw] < fields.json

WSDL is tests/fixtures/wsdl/WSs2s.wsdl, ADDRESS the vault's proxy URL
(https://HOST/v1/proxy/axerve/gestpay/gestpayws/WSs2s.asmx), stdin the call's fields as a JSON
object ({"shopLogin": ..., "tokenValue": ...}). panvault's key goes in `Authorization: Bearer`
on the requests.Session zeep sends with; the vault's CA comes from REQUESTS_CA_BUNDLE (it
overrides a session's `verify` wherever it is set). Prints GestPayS2S as zeep parsed it: a JSON
object of its leaf elements' texts. With `raw`, zeep hands back the HTTP answer unparsed and
GestPayS2S is read from it with lxml: a WSDL in another namespace than the gateway's sends
well, but zeep cannot read the gateway's answer with it.
"""

import json
import os
import sys

try:
    import requests
    import zeep
    from lxml import etree
    from zeep.transports import Transport
except ImportError as e:
    sys.exit(f"axerve_zeep.py: {e}: pip install -r tests/requirements.txt")

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
    # The WSDL's one binding (WSs2sSoap, in whatever namespace the WSDL gives it), at ADDRESS.
    binding = next(iter(client.wsdl.bindings))
    service = client.create_service(binding, address)
    if len(sys.argv) > 3 and sys.argv[3] == "raw":
        with client.settings(raw_response=True):
            answer = service.callPagamS2S(**fields)
        doc = etree.fromstring(answer.content)
        result = next(e for e in doc.iter() if str(e.tag).endswith("GestPayS2S"))
    else:
        result = service.callPagamS2S(**fields)
    # callPagamS2SResult is an XmlNode (mixed content holding any element): zeep hands back
    # that element, GestPayS2S (or, in older versions, an object holding it as `_value_1`).
    gestpay = getattr(result, "_value_1", result)
    if not str(getattr(gestpay, "tag", "")).endswith("GestPayS2S"):
        sys.exit(f"axerve_zeep.py: no GestPayS2S in the answer: {result!r}")
    print(json.dumps(leaves(gestpay, {}), sort_keys=True))


if __name__ == "__main__":
    main()
