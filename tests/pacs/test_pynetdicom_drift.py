"""pynetdicom drift: the project copies or overrides pynetdicom 3.0.4 internals; notice any change.

``UPSTREAM`` names every pynetdicom function, method, class or module that our code
copies, overrides, patches or depends on byte for byte, with the sha256 of
``inspect.getsource`` of it as pynetdicom 3.0.4 has it, and where our copy lives.
``test_upstream_sources_unchanged`` recomputes them and fails naming each one that
changed, so a pynetdicom upgrade is a deliberate re-read of our copies, not a
silent install.

``test_every_override_is_in_the_table`` walks the classes of ours that subclass a
pynetdicom class: every method one of them defines that a pynetdicom base class
also defines must have an entry, so a new override cannot slip in without one.

Adding an entry is one line in ``UPSTREAM``: the dotted name, the hash, where our
copy is. ``python tests/pacs/test_pynetdicom_drift.py pynetdicom.dul.DULServiceProvider.x``
prints that line. After an upgrade, re-read each named copy, then update its hash.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
import socket
import sys
from typing import Any

import pytest

PINNED = "3.0.4"

# dotted name in pynetdicom: (sha256 of its source in 3.0.4, our copy / override / use of it)
UPSTREAM: dict[str, tuple[str, str]] = {
    "pynetdicom.dul.DULServiceProvider.__init__": ("c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0", "pacs/fastpath.py LabDUL.__init__ (super().__init__, then its queues ring a bell on put)"),
    "pynetdicom.dul.DULServiceProvider.run_reactor": ("e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803", "pacs/fastpath.py LabDUL._run (a copy of the loop) and LabDUL.run_reactor"),
    "pynetdicom.dul.DULServiceProvider._decode_pdu": ("fc71dd1bf853e1ce79d29b11731a26a4f6ee9eb697026ad611f8fc91f8aa69c9", "pacs/fastpath.py LabDUL._decode_pdu (a copy that takes the A-ASSOCIATE-RQ rqcheck decoded)"),
    "pynetdicom.fsm.AE_6": ("385d595ed49432afe80c0284b6355b03f83db8ed3e37caae6c30820bf7280b98", "pacs/rqcheck.py _decode_problem (AE-6 calls the request's to_primitive once: the primitive rqcheck made is used by one association)"),
    "pynetdicom.dul.DULServiceProvider.kill_dul": ("5ceccf8dd01c2072c377d18bb1be284941a345bd40f03bd1e03a864ab0817842", "pacs/fastpath.py LabDUL.kill_dul"),
    "pynetdicom.dul.DULServiceProvider.stop_dul": ("28a7e0be126e7b306369cc1b131daec8e907d21d0f5692930133b6599b8c6e5f", "pacs/fastpath.py LabDUL.stop_dul (a copy, woken instead of polled)"),
    "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive": ("5f99c86b14a15cefa87d914cda3591ec4d636d4c53a982e945ec9c1828c6e43f", "pacs/fastpath.py LabAssociation.__init__ put_message (a complete C-STORE request is put on msg_queue in the DUL thread: it sets LabDUL.reads_held)"),
    "pynetdicom.fsm.DT_2": ("9ec543394e0b49eb8be2448fc3f9950361b0047db7cf3742844f377bd225ba73", "pacs/fastpath.py LabDUL.reads_held (DT-2 hands P-DATA to the DIMSE in the DUL thread, before its next read)"),
    "pynetdicom.dul.DULServiceProvider._is_transport_event": ("8725ed03bb8fbdefef249d5d9888c120e6277d7b6aa2c4f537e23027186e1253", "ct-simulator/wire.py StoreChannel.__enter__ (replaced per instance by park())"),
    "pynetdicom.dul.DULServiceProvider._process_recv_primitive": ("4c0ebbb3e646e35e8e5bbc27ee2f1e6b2c82bbf619232f47639a6cbae092ed39", "pacs/fastpath.py LabDUL._run (called by the copied loop)"),
    "pynetdicom.association.Association.__init__": ("eb07516b8009ad8fa338201dea39578380fbf9f2c59fa5e368e20250eb97c4ea", "pacs/fastpath.py LabAssociation.__init__ (replaces self.dul, rings on its queues)"),
    "pynetdicom.association.Association.kill": ("8f9713666a7f4cffd840899f023090e9786668945a7c844f99d7a834077c3972", "pacs/fastpath.py LabAssociation.kill (a copy)"),
    "pynetdicom.association.Association._run_reactor": ("f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee", "pacs/fastpath.py LabAssociation._run_reactor (a copy of the loop)"),
    "pynetdicom.association.Association.run_reactor": ("ed8bbbe3b3d6ddaee3e8673ba25b2ab2a4c45f25bc1d8ae7b48ebafd09499e6d", "pacs/transport.py LabRequestHandler.handle (runs it in the connection's thread)"),
    "pynetdicom.dimse.DIMSEServiceProvider.__init__": ("bbecd186810e77006d189aff29c42e76d226cd6b34cbb12066c56300a8280ef4", "pacs/fastpath.py LabAssociation.__init__ (rings on dimse.msg_queue)"),
    "pynetdicom.transport.AssociationSocket.recv": ("6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d", "pacs/transport.py FastSocket.recv (pacs/wire.py recv_up_to); common dicomlab/outbound.py _OutboundSocket.recv (records a read error and an unknown PDU type: pynetdicom only logs them)"),
    "pynetdicom.transport.AssociationSocket.send": ("1ea8158c0b51facac667a0340b93f495b947fdc4f55663946fb30d456c804e09", "pacs/transport.py FastSocket.send and common dicomlab/outbound.py _OutboundSocket.send (call it, then an immediate ACK: a peer that keeps Nagle on; it must still swallow a failure into Evt17)"),
    "pynetdicom.transport.AssociationSocket.connect": ("aeeeae413bd339dcc18230a6c0926993a824fd6ec31479febfbe21734911482f", "common dicomlab/outbound.py _RecordingSocket / dicomlab/tlsclient.py _RecordingSSLSocket (its except logs the error and swallows it: our sockets record it)"),
    "pynetdicom.transport.AssociationSocket._create_socket": ("bf8b92b106c8aa07e6a0d6cf483002f71bdab3320fda7f0fefeb99d7c52a10f6", "common dicomlab/outbound.py _OutboundSocket._create_socket"),
    "pynetdicom.ae.ApplicationEntity._create_socket": ("f56bca8888e1ce9f3d64f30608db5d89f003b0b1b31106d3178a550871a4030f", "common dicomlab/outbound.py OutboundAE._create_socket"),
    "pynetdicom.transport.RequestHandler._create_association": ("05c8d12b79863cdbdb901ce37187b7030a0434c5cd89d219ed0bedbda679a61e", "pacs/transport.py LabRequestHandler._create_association (a copy)"),
    "pynetdicom.transport.RequestHandler.handle": ("034823fb4df3a87467bd0d45193f0d457fcf59c87fda8e97b2edfb89426f76dd", "pacs/transport.py LabRequestHandler.handle"),
    "pynetdicom.transport.AssociationServer.service_actions": ("0a0853a3615ac7c5260a57dcdc8b0e9908d655919b7d64737c89534869758873", "pacs/transport.py LabServer.service_actions (no gc.collect)"),
    "pynetdicom.transport.AssociationServer.shutdown": ("e8e2c3a41009886d8544d17ce01118a81bac81b612a1d17f30fc200971f41db9", "pacs/transport.py LabServer.shutdown"),
    "pynetdicom.transport.AssociationServer.process_request": ("4fa44ac5b54b4498035cc1d8b32e1c3035ffee46a054fb2abffad634997b7f18", "pacs/transport.py LabServer.process_request (reused threads)"),
    "pynetdicom.transport.AssociationServer.server_bind": ("cf69278a05a5c777b7e9e9af0769e3102618027b2ec8035a30af8cc370ebdae6", "pacs/transport.py SharedPortServer.server_bind, InheritedSocketServer.server_bind"),
    "pynetdicom.transport.AssociationServer.server_close": ("3fa1b358badbe6826671da5e9d11cd86944be35327c47caeeff571f74bc3cca9", "pacs/transport.py InheritedSocketServer.server_close"),
    "pynetdicom.transport.AssociationServer.get_request": ("925a4f3a3042f6e4b944505d06dc19c41e10ff7dec5385c794d62d31fd000300", "pacs/gate.py Gate._accept (the gate accepts from the socket in its place)"),
    "pynetdicom.transport.ThreadedAssociationServer.process_request_thread": ("9e76e9b9c8a3d8b18bb1df7ac652c86f21b4aaaf39e10deca9312f91a7c21a8a", "pacs/transport.py LabServer.process_request (submits it)"),
    "pynetdicom.dimse_messages.DIMSEMessage.encode_msg": ("73000c902c52832dab302ddb3bc274ea93d205a810a197225dd87d4c1212ba57", "pacs/wire.py response_pdu, ct-simulator/wire.py frame (same bytes)"),
    "pynetdicom.dimse_messages.DIMSEMessage.decode_msg": ("f51c777e841a76beeaadfe3015bd4f4a68387229a72f13f3a3b7846d01d72284", "pacs/wire.py DataPhase.run (fragment reassembly); pacs/spooling.py (its chunked layout: preamble, file meta, dataset)"),
    "pynetdicom.dimse_messages.C_ECHO_RSP": ("00d6e0dfe6056c798db9ad244e12ddd7250527db6daf8795392626135178783a", "pacs/wire.py response_pdu (its elements, in order)"),
    "pynetdicom.dimse_messages.C_STORE_RSP": ("3afd6139a34c3ca95851593a70f6513701f53ffdcfa699cd61b97d944bf381ad", "pacs/wire.py response_pdu (its elements, in order)"),
    "pynetdicom.dimse_messages.C_STORE_RQ": ("3e86b976b81c7ce608ade127c0025b1419dabd9cc5cb9459c7dee824aa8ef71c", "ct-simulator/wire.py c_store_rq (its elements, in order)"),
    "pynetdicom.pdu.P_DATA_TF": ("6fdbc751c92b9874e3f1555c485f41d35f65002a72fcf2ae85ae5a9c747b6077", "pacs/wire.py response_pdu, ct-simulator/wire.py frame (PDU layout)"),
    "pynetdicom._config": ("c98c80b019811fc0d503132e1bd4a2741a98976986526f2f8d7e90ba1a1d3248", "pacs/listener.py make_ae (LOG_HANDLER_LEVEL), pacs/qr.py install (STORE_SEND_CHUNKED_DATASET), ct-simulator/network.py (VALIDATORS[AE])"),
    "pynetdicom._validators.validate_ae": ("82260676b179fe9f6702a2412dc7ad899c420e24912716d451ed8c90bc041dc6", "ct-simulator/network.py _lab_ae_validator (falls back to it)"),
    "pynetdicom.transport.AssociationSocket.ready": ("3eb58e3d39dc076df7a04c804ca183ffd3f4d1b34361039e9e6f11de3d45579c", "pacs/transport.py FastSocket.ready (True while the gate's pre-read bytes remain)"),
    "pynetdicom.dul.DULServiceProvider._read_pdu_data": ("19f2d4e38c13c83586365d93dd5cd96a0c7c665cb37251054b3e1f246e9f431b", "pacs/guard.py PduGuard (relies on its recv(6) then recv(length) reads, which FastSocket.recv checks)"),
    "pynetdicom.dul.DULServiceProvider.receive_pdu": ("fa67339834ca998cb31eb1806a854864200464b0a9991333d387aa419478c4e6", "pacs/fastpath.py LabAssociation._run_reactor (called by the copied loop)"),
    "pynetdicom.dul.DULServiceProvider.idle_timer_expired": ("0150c19fda68f6e95f435aa00dd69a286a3a1dd870ee1acd9948c6738a449357", "pacs/fastpath.py LabAssociation._run_reactor (called by the copied loop)"),
    "pynetdicom.fsm.AA_4": ("de72d40c80b07e3e33dde67579bcfeef285a3f0156952a36c11d95c3260e105d", "pacs/guard.py (a failed read is Evt17 -> AA-4: A-P-ABORT to the association), pacs/transport.py FastSocket"),
    "pynetdicom.association.Association._serve_request": ("2f24c1759cdf6c8c433094f2a8dd8144f76f5547f03daed7b94e0f78bc12f877", "pacs/fastpath.py LabAssociation._run_reactor (invalid requests aborted before it; it serves the rest); pacs/qr.py install (it looks the service class up by pynetdicom.association's uid_to_service_class)"),
    "pynetdicom.dimse.DIMSEServiceProvider.get_msg": ("890e3e04283f5aeb756236f1a4dd35d3a10bbdd52f3efa3f3950c01f47bd2b34", "pacs/fastpath.py LabAssociation._run_reactor (called by the copied loop)"),
    "pynetdicom.acse.ACSE.send_accept": ("c03855deabefe9759dd6306295f91c506f4991faae2d8ee49905fc8192c3a8ce", "pacs/direct.py accept_pdu (the A-ASSOCIATE primitive it builds, a copy)"),
    "pynetdicom.acse.ACSE._negotiate_as_acceptor": ("fffd360957c42a8ed89284cf1b1b734527c9be60253950777a0330c0f2be692e", "pacs/direct.py serve (what it does for a plain request: negotiate_as_acceptor on the supported contexts, accepted sorted + rejected, send_accept; its other checks are the policy's or make a request not plain)"),
    "pynetdicom.fsm.AE_7": ("c62284735836c78a25d855f8beecd976441564d1dbf784b17e7adb1cdf2496a7", "pacs/direct.py accept_pdu (A_ASSOCIATE_AC from the primitive, encoded and sent)"),
    "pynetdicom.association.Association.get_handlers": ("7cb7298701d5c7661c15da5037157dbac930c739d7b54ec8c08e7fe584d1e301", "pacs/direct.py DirectAssociation.get_handlers (the server's handlers, as evt.trigger reads them)"),
    "pynetdicom.events.trigger": ("b97f8a75e8affaa01693856a8cbeb7aea6d3b4641cec8ca1975c15b0eea76690", "pacs/direct.py DirectAssociation (what trigger reads and sets on an association: get_handlers, abort, _abort_nonblocking, _abort_blocking)"),
    "pynetdicom.association.ServiceUser.__init__": ("81bf9cfc3aff80ea1a571e880af8222dedb293c54405972de067070ca7dc7f69", "pacs/direct.py DirectAssociation (pynetdicom's ServiceUser on it: reads assoc.ae)"),
    "pynetdicom.association.Association.accepted_contexts": ("f35e6c825dba292cf4f354ad73d5af7dac84c0e34fd0b1e1960653acaaed62e2", "pacs/direct.py serve (accepted contexts sorted by context ID, as this property gives them)"),
    "pynetdicom.acse.ACSE.send_abort": ("6707ebd82b156b4bf68ad74f26dabdb461709f0da4b94a7ad6307060ca38c76f", "pacs/fastpath.py LabAssociation._run_reactor, pacs/wire.py abort_from_elsewhere (writes the A-ABORT it would send, on the socket data phase at shutdown)"),
    "pynetdicom.service_class.StorageServiceClass.SCP": ("63afca7fc6c6e7ee6e6eb303dd6aa72c1e69dbfcb94dd91c9e90ea6d900a4c40", "pacs/spooling.py (the EVT_C_STORE handler reads event.dataset_path; SCP removes the file after it returns)"),
    "pynetdicom.events.Event.dataset_path": ("7eba7552ff800249a475c9789cd02b1c7e2e8f89208e91c71636b05fdcdb53b8", "pacs/spooling.py spool_event (the chunked dataset's temporary file)"),
    "pynetdicom.pdu.A_ASSOCIATE_RQ.decode": ("07098f2d8a4d45e4630f744c35eeddbd2faee19ef5cd257d72ab1f362ec013fa", "pacs/rqcheck.py rq_problem (the gate decodes each request with it before the hand-over)"),
    "pynetdicom.pdu.A_ASSOCIATE_RQ.to_primitive": ("92cb1a8bedf659e5ed93aafac546740e080a9e94cae90b22e150f407e4c05019", "pacs/rqcheck.py rq_problem (raises on an even context ID, an unknown user identity type); _decode_problem pins the decoded request's to_primitive to the primitive made there"),
    "pynetdicom.pdu_items.PresentationContextItemRQ.to_primitive": ("820a8752cc816f2ca5e462ee017c94de380b0afa0d90830e8c3b9d75a22597f6", "pacs/rqcheck.py rq_problem (a context without abstract syntax arrives as None)"),
    "pynetdicom.presentation.negotiate_as_acceptor": ("d5413f08f0ac7b32b2b95f629d88242be5785d4a37888a14c265e0c27452da05", "pacs/rqcheck.py rq_problem (checks what it raises on: no abstract syntax, no transfer syntax)"),
    "pynetdicom.service_class.QueryRetrieveServiceClass._move_scp": ("5c14d1be3d737befcc148893bcd529a03695e82f8f943f19b640ff4f32382742", "pacs/qr.py LabQueryRetrieve._move_scp (our own C-MOVE, not a copy: outbound association, counts, words)"),
    "pynetdicom.service_class.QueryRetrieveServiceClass._get_scp": ("8ca1538e3e56c4f7317f3d8bd0d0e009d596e9f3c57027db3128ec7e728e46a6", "pacs/qr.py LabQueryRetrieve._get_scp (our own C-GET, not a copy: role check, files as stored)"),
    "pynetdicom.sop_class.uid_to_service_class": ("88fa4636b8cbaacdefe698cc3dbfc527849b9f3d2621777843d08e36eb32c6e8", "pacs/qr.py install (pynetdicom.association's name for it replaced by _service_class, which defers to it)"),
    "pynetdicom.association.Association.send_c_store": ("fa5a8127f349f8e75698f4cdf2b4dbe3f38e3e9e320a8cf45c15bf8333f9c283", "pacs/qr.py QueryRetrieve._send_all (a path with STORE_SEND_CHUNKED_DATASET: the file's bytes as stored, its context chosen without conversion)"),
    "pynetdicom.dsutils.decode": ("33aaa74edebf31884a6626b1df7173cc52e9a26f7e00d78fe95247c9f8e24e49", "pacs/wire.py DataPhase (command sets and dataset headers)"),
}

# Modules whose classes may subclass pynetdicom classes (walked by the second test).
OUR_MODULES = ["pacs.listener", "pacs.transport", "pacs.associations", "pacs.echostore", "pacs.faults",
               "pacs.session", "pacs.qr", "pacs.fastpath", "pacs.wire", "pacs.guard", "pacs.gate", "pacs.spooling",
               "pacs.rqcheck", "admin_api.echo", "dicomlab.outbound", "ct_simulator.network",
               "ct_simulator.wire", "ct_simulator.sender", "ct_simulator.worker"]


def resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(dotted)


def source_hash(dotted: str) -> str:
    obj = resolve(dotted)
    if isinstance(obj, property):  # e.g. AssociationSocket.ready: the getter's source
        obj = obj.fget
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()


def test_pynetdicom_is_the_pinned_version():
    import pynetdicom

    assert pynetdicom.__version__ == PINNED, (
        f"pynetdicom {pynetdicom.__version__} is installed, the project pins =={PINNED}: our copies of its "
        "internals (UPSTREAM in this file) were written against that version.")


def test_upstream_sources_unchanged():
    changed = []
    for dotted, (expected, ours) in UPSTREAM.items():
        try:
            got = source_hash(dotted)
        except (ImportError, AttributeError, OSError, TypeError) as exc:
            changed.append(f"pynetdicom no longer has {dotted} ({exc}): re-read our copy in {ours}")
            continue
        if got != expected:
            changed.append(f"pynetdicom changed {dotted}: re-read our copy in {ours} (new hash {got})")
    assert not changed, "\n".join(changed)


def _our_classes() -> list[type]:
    classes: list[type] = []
    for name in OUR_MODULES:
        mod = importlib.import_module(name)
        classes += [obj for obj in vars(mod).values()
                    if inspect.isclass(obj) and obj.__module__ == name and _pynetdicom_bases(obj)]
    from pacs.transport import _inherited_server_class

    with socket.socket() as s:  # a class made at run time, for the listening socket the workers share
        classes.append(_inherited_server_class(s))
    return classes


def _pynetdicom_bases(cls: type) -> list[type]:
    return [b for b in cls.__mro__[1:] if b.__module__.startswith("pynetdicom")]


def test_every_override_is_in_the_table():
    classes = _our_classes()
    found = {c.__name__ for c in classes}
    expected = {"LabDUL", "LabAssociation", "FastSocket", "LabRequestHandler", "LabServer", "SharedPortServer",
                "InheritedSocketServer"}
    assert expected <= found, f"the walk must find our pynetdicom subclasses; missing {sorted(expected - found)}"
    missing = []
    for cls in classes:
        for attr, value in vars(cls).items():
            if not (inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod, property))):
                continue
            for base in _pynetdicom_bases(cls):
                if attr in vars(base):  # the pynetdicom class that defines what we override
                    dotted = f"{base.__module__}.{base.__qualname__}.{attr}"
                    if dotted not in UPSTREAM:
                        missing.append(f"{cls.__module__}.{cls.__qualname__}.{attr} overrides {dotted}, which has "
                                       f"no UPSTREAM entry: add\n    {entry_line(dotted, cls)}")
                    break
    assert not missing, "\n".join(missing)


def test_the_walk_covers_the_pacs_package():
    """Every pacs module that subclasses a pynetdicom class is in OUR_MODULES (a new module
    with an override cannot escape the walk above)."""
    import pacs

    unlisted = []
    for info in pkgutil.iter_modules(pacs.__path__, "pacs."):
        if info.name == "pacs.__main__" or info.name in OUR_MODULES:  # __main__ runs the PACS when imported
            continue
        mod = importlib.import_module(info.name)
        unlisted += [f"{info.name}.{obj.__qualname__}" for obj in vars(mod).values()
                     if inspect.isclass(obj) and obj.__module__ == info.name and _pynetdicom_bases(obj)]
    assert not unlisted, f"subclasses of pynetdicom classes in modules missing from OUR_MODULES: {unlisted}"


def entry_line(dotted: str, ours: Any = "our copy") -> str:
    where = f"{ours.__module__}.{ours.__qualname__}" if inspect.isclass(ours) else ours
    return f'"{dotted}": ("{source_hash(dotted)}", "{where}"),'


@pytest.mark.parametrize("dotted", sorted(UPSTREAM))
def test_table_entries_resolve(dotted):
    """Each entry names something pynetdicom has (a typo would hide a drift)."""
    assert resolve(dotted) is not None


if __name__ == "__main__":  # print the UPSTREAM line for each name given
    for name in sys.argv[1:]:
        print("    " + entry_line(name))
