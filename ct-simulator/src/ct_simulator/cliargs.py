"""The command line's shared options and what they build: the option groups (what to
generate, where to send, DICOM TLS, ``--ladder``) and the ``StudyPlan``, ``Link`` and
``TlsSpec`` made from them, with the defaults from the environment and the PACS's
listener settings in Redis."""

from __future__ import annotations

import argparse
import os
from typing import Any

from dicomlab.conformance import SIM_SOP_CLASSES
from dicomlab.errors import LabError
from dicomlab.settings import EnvConfig

from .iod import StudyPlan
from .network import Link

SOP_CLASSES = SIM_SOP_CLASSES  # one list, shared with the conformance statement


def env_config() -> EnvConfig:
    return EnvConfig.from_env()


def listener_defaults(env: EnvConfig) -> tuple[str, int, int]:
    """The PACS's AE title, plain port and TLS port: Redis's listener settings when REDIS_URL answers,
    else the env seeds (PACS_TLS_PORT, else 2762, the port registered for DICOM TLS)."""
    tls_port = int(os.environ.get("PACS_TLS_PORT") or 2762)
    if env.redis_url:
        try:
            from dicomlab.registry import Registry, connect

            client = connect(env.redis_url, timeout=1.0)
            try:
                listener = Registry(client).get_listener()
                return listener.ae_title, listener.port, listener.tls_port
            finally:
                client.close()
        except LabError:
            pass
    return env.pacs_ae_title, env.pacs_port, tls_port


def add_plan(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to generate")
    g.add_argument("--studies", type=int, default=1, help="studies (default 1)")
    g.add_argument("--series", type=int, default=1, help="series per study (default 1)")
    g.add_argument("--slices", type=int, default=50, help="slices per series (default 50)")
    g.add_argument("--rows", type=int, default=512, help="rows (default 512)")
    g.add_argument("--cols", type=int, default=512, help="columns (default 512)")
    g.add_argument("--seed", type=int, default=None, help="same seed, same objects (default: a new random seed)")
    g.add_argument("--patient-name", help="Patient's Name, e.g. DOE^JANE (default: from the seed)")
    g.add_argument("--patient-id", help="Patient ID (default: from the seed)")
    g.add_argument("--accession-number", help="Accession Number (default: from the seed)")
    g.add_argument("--study-description", default="CT THORAX ABDOMEN")
    g.add_argument("--spacing", type=float, default=None, help="slice spacing in mm (default: the scan covers 500 mm)")
    g.add_argument("--sop-class", default="ct",
                   help="SOP class of the objects: ct, enhanced-ct, mr, sc or a UID; anything but ct is a "
                        "misbehaviour (CT pixels under another SOP class) to test what the PACS accepts")
    g.add_argument("--duplicate-uids", action="store_true",
                   help="misbehave: every instance of a series reuses one SOP Instance UID")


def add_link(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where to send (defaults: SIM_AE_TITLE, PACS_HOST, and the PACS listener settings "
                             "in Redis, else PACS_AE_TITLE / PACS_PORT)")
    g.add_argument("--host", help="PACS host")
    g.add_argument("--port", type=int, help="PACS port")
    g.add_argument("--calling-aet", help="our AE title, sent as given even when invalid (over 16 characters: cut to 16)")
    g.add_argument("--called-aet", help="the PACS's AE title, sent as given")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds for TCP connect and association answer (10)")
    g.add_argument("--dimse-timeout", type=float, default=60.0, help="seconds to wait for each C-STORE answer (60)")
    add_tls(p)


def add_tls(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("DICOM TLS (TLS 1.2 or later; the PACS's certificate and host name are checked)")
    g.add_argument("--tls", action="store_true",
                   help="use DICOM TLS; the default port becomes the PACS's TLS port (2762)")
    g.add_argument("--tls-ca", metavar="FILE", help="the CA certificate(s) to trust (the lab CA: ca.pem)")
    g.add_argument("--tls-cert", metavar="FILE", help="this CT's certificate (PEM; may hold the key too)")
    g.add_argument("--tls-key", metavar="FILE", help="this CT's private key (PEM)")
    g.add_argument("--tls-bundle", metavar="FILE",
                   help="one PEM file with certificate, key and CA, as the admin API issues it")
    g.add_argument("--tls-request-cert", action="store_true",
                   help="ask the admin API (ADMIN_URL or --api, ADMIN_TOKEN or --token) to issue this CT's "
                        "certificate (a PEM bundle for the node with the calling AE title)")
    g.add_argument("--api", help="admin API base URL (default ADMIN_URL, else http://127.0.0.1:$ADMIN_PORT)")
    g.add_argument("--token", help="admin API token (default ADMIN_TOKEN)")
    g.add_argument("--tls-server-name", metavar="NAME",
                   help="the name to check in the PACS's certificate (default: --host)")
    g.add_argument("--tls-no-host-check", action="store_true",
                   help="do not check the PACS's host name against its certificate (the chain is still "
                        "verified); for a lab only")
    g.add_argument("--tls-lab-ca", metavar="DIR",
                   help="the lab CA's folder (ca.pem, ca.key), to sign the misbehaving certificates below")
    m = p.add_argument_group("DICOM TLS misbehaviour")
    m.add_argument("--tls-trust-other-ca", action="store_true",
                   help="trust a CA of our own instead of the lab's (the PACS's certificate looks unknown)")
    m.add_argument("--tls-no-cert", action="store_true", help="present no client certificate")
    m.add_argument("--tls-expired-cert", action="store_true",
                   help="present a lab CA certificate that expired yesterday (needs --tls-lab-ca)")
    m.add_argument("--tls-cert-of", metavar="AE",
                   help="present another node's certificate (from the admin API with --tls-request-cert, "
                        "else signed with --tls-lab-ca)")
    m.add_argument("--tls-outdated", action="store_true",
                   help="offer TLS 1.0 and 1.1 only (OpenSSL security level 0)")
    m.add_argument("--wrong-port", action="store_true",
                   help="with --tls, send to the PACS's plain port; without, send plain DICOM to its TLS port")


def tls_of(a: argparse.Namespace, env: EnvConfig) -> Any:
    from .tls import TlsSpec

    if not a.tls:
        for flag in ("tls_ca", "tls_cert", "tls_key", "tls_bundle", "tls_request_cert", "tls_trust_other_ca",
                     "tls_no_cert", "tls_expired_cert", "tls_cert_of", "tls_outdated", "tls_no_host_check"):
            if getattr(a, flag, None):
                raise ValueError(f"--{flag.replace('_', '-')} needs --tls")
        return None
    request = None
    if a.tls_request_cert:
        token = a.token or env.admin_token
        if not token:
            raise ValueError("--tls-request-cert needs the admin token: ADMIN_TOKEN or --token")
        request = (a.api or os.environ.get("ADMIN_URL") or f"http://127.0.0.1:{env.admin_port}", token)
    return TlsSpec(ca_file=a.tls_ca, cert_file=a.tls_cert, key_file=a.tls_key, bundle=a.tls_bundle,
                   check_hostname=not a.tls_no_host_check, server_name=a.tls_server_name, request_from=request,
                   lab_ca_dir=a.tls_lab_ca, trust_other_ca=a.tls_trust_other_ca, no_cert=a.tls_no_cert,
                   expired_cert=a.tls_expired_cert, cert_of=a.tls_cert_of, outdated=a.tls_outdated)


def plan_of(a: argparse.Namespace, station: str) -> StudyPlan:
    sop = SOP_CLASSES.get(a.sop_class.lower(), a.sop_class)
    seed = a.seed
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "big") >> 1
    return StudyPlan(studies=a.studies, series=a.series, slices=a.slices, rows=a.rows, cols=a.cols, seed=seed,
                     patient_name=a.patient_name, patient_id=a.patient_id, accession_number=a.accession_number,
                     study_description=a.study_description, station_name=station, slice_spacing_mm=a.spacing,
                     sop_class_uid=sop, duplicate_uids=a.duplicate_uids)


def link_of(a: argparse.Namespace, env: EnvConfig) -> Link:
    tls = tls_of(a, env)
    called, port = (a.called_aet, a.port)
    if a.wrong_port and port is not None:
        raise ValueError("--wrong-port picks the port itself: leave out --port")
    if called is None or port is None:
        d_called, d_plain, d_tls = listener_defaults(env)
        called = d_called if called is None else called
        if port is None:
            port = d_tls if (tls is not None) != a.wrong_port else d_plain
    return Link(host=a.host or env.pacs_host, port=port, calling_aet=a.calling_aet or env.sim_ae_title,
                called_aet=called, connect_timeout=a.timeout, acse_timeout=a.timeout, dimse_timeout=a.dimse_timeout,
                tls=tls)


def add_ladder(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ladder", action="store_true",
                   help="print each association as a ladder diagram, as the simulator saw it: TCP connect, "
                        "A-ASSOCIATE-RQ and its contexts, AC or RJ, the C-STOREs collapsed with counts and "
                        "round trips, release or abort (with --json: a \"ladders\" list)")


def check_plan(plan: StudyPlan) -> None:
    for name in ("studies", "series", "slices"):
        if getattr(plan, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if not (16 <= plan.rows <= 4096 and 16 <= plan.cols <= 4096):
        raise ValueError("--rows and --cols must be from 16 to 4096")
