"""A scenario's reward gatherer per ``mode``: ``sim`` (virtual time, :mod:`.sim`), ``emulate``
(local edge processes behind fault proxies, :mod:`.emulate`) and ``live`` (real devices,
:mod:`.live`). Each builds on the server's gatherers in ``fedgrpo.server.gathering``."""
