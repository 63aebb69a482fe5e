"""Several gateways as one line pool, behind Kamailio (docs/fleet.md).

:mod:`.model` reads ``fleet.toml``, the description of the whole fleet that
lives on the Kamailio host; :mod:`.kamailio` renders Kamailio's files from it
(pure); :mod:`.cli` is ``btgw fleet render``.  A gateway's own side (its
``[fleet]`` membership, the dialplan that answers 503, the state it pushes)
lives with the gateway: :mod:`btgw.config`, :mod:`btgw.render.dialplan`,
:mod:`btgw.daemon.fleet`; the names both sides share are in
:mod:`btgw.contracts.fleet`.
"""
