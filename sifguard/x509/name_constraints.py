"""nameConstraints (RFC 5280 §4.2.1.10) of a CA over the certificates below it.

Enforced whether the extension is critical or not. Name forms checked: directoryName
(the subject DN, and directoryName SANs), rfc822Name (e-mail SANs and emailAddress
attributes of the subject), dNSName, URI (its host) and iPAddress. A constraint on any
other form (otherName, registeredID, …) that applies to a name the certificate carries
refuses the certificate, as does a name that cannot be compared (a URI without a host,
a wildcard DNS name, an address without '@'): fail closed. Comparisons ignore case
(also in the local part of an e-mail address, so an excluded mailbox cannot be evaded
by case) and, for DN attribute values, surrounding and repeated white space.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID

_FORMS = {x509.DirectoryName: "directoryName", x509.RFC822Name: "rfc822Name", x509.DNSName: "dNSName",
          x509.UniformResourceIdentifier: "URI", x509.IPAddress: "iPAddress",
          x509.OtherName: "otherName", x509.RegisteredID: "registeredID"}
SUPPORTED = ("directoryName", "rfc822Name", "dNSName", "URI", "iPAddress")


class _Incomparable(Exception):
    """The name cannot be compared with a constraint of its form."""


def _form(gn) -> str:
    return _FORMS.get(type(gn), type(gn).__name__)


def _norm(v) -> object:
    return " ".join(v.casefold().split()) if isinstance(v, str) else v


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> frozenset:
    return frozenset((a.oid.dotted_string, _norm(a.value)) for a in rdn)


def _dn_within(name: x509.Name, base: x509.Name) -> bool:
    b, n = base.rdns, name.rdns
    return len(b) <= len(n) and all(_rdn_key(x) == _rdn_key(y) for x, y in zip(b, n))


def _host(v: str) -> str:
    h = v.casefold().rstrip(".")
    if not h or "*" in h:
        raise _Incomparable(f"cannot compare the host name {v!r}")
    return h


def _dns_within(name: str, base: str) -> bool:
    n, b = _host(name), base.casefold().rstrip(".")
    if not b:
        return True
    if b.startswith("."):
        return n.endswith(b)
    return n == b or n.endswith("." + b)


def _email_within(addr: str, base: str) -> bool:
    local, at, host = addr.rpartition("@")
    if not at or not local or not host:
        raise _Incomparable(f"cannot compare the e-mail address {addr!r}")
    b = base.casefold()
    if not b:
        return True
    if "@" in b:
        return addr.casefold() == b
    h = _host(host)
    return h.endswith(b) if b.startswith(".") else h == b.rstrip(".")


def _uri_within(uri: str, base: str) -> bool:
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        host = None
    if not host:
        raise _Incomparable(f"the URI {uri!r} has no host to compare")
    try:
        ipaddress.ip_address(host)
        raise _Incomparable(f"the URI {uri!r} names an IP address")
    except ValueError:
        pass
    h, b = _host(host), base.casefold().rstrip(".")
    if not b:
        return True
    return h.endswith(b) if b.startswith(".") else h == b


def _ip_within(addr, net) -> bool:
    return isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)) and addr.version == net.version \
        and addr in net


_WITHIN = {"directoryName": _dn_within, "rfc822Name": _email_within, "dNSName": _dns_within,
           "URI": _uri_within, "iPAddress": _ip_within}


def _names(cert: x509.Certificate) -> list[tuple[str, object]]:
    """(form, value) of every name the certificate carries that constraints can restrict."""
    out: list[tuple[str, object]] = []
    if len(cert.subject) > 0:
        out.append(("directoryName", cert.subject))
    out += [("rfc822Name", a.value) for a in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = []
    out += [(_form(gn), gn.value) for gn in san]
    return out


def _show(form: str, value) -> str:
    return value.rfc4514_string() if isinstance(value, x509.Name) else f"{form} {value}"


def violation(nc: x509.NameConstraints, cert: x509.Certificate) -> str | None:
    """Why `cert`'s names break the constraints `nc`, or None."""
    permitted, excluded = list(nc.permitted_subtrees or []), list(nc.excluded_subtrees or [])
    for form, value in _names(cert):
        perm = [s.value for s in permitted if _form(s) == form]
        excl = [s.value for s in excluded if _form(s) == form]
        if not perm and not excl:
            continue
        if form not in SUPPORTED:
            return f"name constraints on the {form} form are not supported, and the certificate has one"
        within = _WITHIN[form]
        try:
            for base in excl:
                if within(value, base):
                    return f"{_show(form, value)} is in an excluded subtree"
            if perm and not any(within(value, base) for base in perm):
                return f"{_show(form, value)} is outside the permitted subtrees"
        except _Incomparable as e:
            return str(e)
    return None


def ca_constraints(ca: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None
