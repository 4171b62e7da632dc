"""How the server gathers rewards: the ``RewardGatherer`` interface and in-process gatherers
(:mod:`.base`), one HTTP round against edge devices (:mod:`.http`, over :mod:`.transport`),
and the asynchronous gatherer that keeps stragglers working (:mod:`.asynchronous`)."""
