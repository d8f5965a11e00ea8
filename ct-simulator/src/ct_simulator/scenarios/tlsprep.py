"""DICOM TLS for a scenario: the catalogue's ``action.tls`` turned into a
``ct_simulator.tls.TlsSpec`` (its ``from_dict`` form), with the lab CA certificate and the
node certificates from the admin API, or signed with the lab CA's folder when the admin API
does not issue them (and always for an expired certificate)."""

from __future__ import annotations

import os
from typing import Any

from .adminapi import ApiError
from .context import LabContext, Skip

OTHER_AET = "LABOTHER"  # the other node whose certificate a modality presents (wrong-client-identity)


def tls_port(ctx: LabContext, scp_changes: dict[str, Any]) -> int:
    if "tls_port" in scp_changes:
        return int(scp_changes["tls_port"])
    if ctx.pacs_tls_port is None:
        raise Skip("the PACS's DICOM TLS port is not known here (give --pacs-tls-port)")
    return ctx.pacs_tls_port


def lab_ca_file(ctx: LabContext) -> str:
    """The lab CA certificate: from the admin API, else from the lab CA's folder."""
    path = os.path.join(ctx.workdir, "lab-ca.pem")
    try:
        pem = ctx.api.lab_ca()
    except ApiError as exc:
        if ctx.tls_dir and os.path.isfile(os.path.join(ctx.tls_dir, "ca.pem")):
            return os.path.join(ctx.tls_dir, "ca.pem")
        raise Skip(f"no lab CA certificate: the admin API gave none ({exc}) and no lab CA folder "
                   "(--tls-lab-ca)") from exc
    with open(path, "wb") as fh:
        fh.write(pem)
    return path


def need_ca_dir(ctx: LabContext, what: str) -> str:
    d = ctx.tls_dir
    if not d or not os.path.isfile(os.path.join(d, "ca.key")):
        raise Skip(f"{what} is signed with the lab CA's key, which is not readable here (give --tls-lab-ca "
                   "DIR, the PACS's TLS folder)")
    return d


def tls_spec(ctx: LabContext, tls: dict[str, Any], calling: str) -> dict[str, Any]:
    """The catalogue's action.tls as a ``ct_simulator.tls.TlsSpec`` (its ``from_dict`` form)."""
    api = ctx.api
    d: dict[str, Any] = {"ca_file": lab_ca_file(ctx)}
    if tls.get("server_name"):
        d["server_name"] = tls["server_name"]
    if tls.get("outdated"):
        d["outdated"] = True
    if tls.get("ca") == "other":
        d["trust_other_ca"] = True
    cert = tls.get("cert", "issued")
    if cert == "none":
        d["no_cert"] = True
    elif cert == "expired":
        d["expired_cert"] = True
        d["lab_ca_dir"] = need_ca_dir(ctx, "an expired certificate of the lab CA")
    else:
        who = OTHER_AET if cert == "other-node" else calling
        if ctx.api.can_issue_certificates():
            d["request_from"] = [api.url, api.token]
            if who != calling:
                d["cert_of"] = who
        else:
            d["cert_of"] = who
            d["lab_ca_dir"] = need_ca_dir(ctx, f"the certificate of {who}")
    return d
