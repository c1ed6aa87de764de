"""RFC 3161 time-stamping: the site Time-Stamping Authority and the client side.

authority  the TSA core: a DER TimeStampReq in, a DER TimeStampResp (token or rejection) out
service    `ca serve`'s /tsa endpoint: the Authority loaded from a CA directory, HTTP in and out
request    the client: a TimeStampReq for a signature value, the reply checked (status, imprint, nonce)
token      the verifier: what a token says, and whether it counts (CMS signature, ESS binding, TSA
           profile and chain to the TSA roots at genTime)
"""
