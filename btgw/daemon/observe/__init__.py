"""Seeing the gateway from outside: Prometheus metrics, the status page, Home Assistant.

Everything here reads the snapshot the daemon already takes each loop turn
(:attr:`btgw.daemon.supervisor.Supervisor.latest`) and renders it; nothing
here observes BlueZ or Asterisk itself.  See docs/observability.md.
"""
