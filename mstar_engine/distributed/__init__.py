"""Data-parallel runs over several processes: process group, shards, launcher (spawn or torchrun).

* :mod:`.group`: a process's place in a run (:class:`~.group.Group`) and the collectives training
  needs;
* :mod:`.launch`: start a function on several processes, or join a ``torchrun`` launch;
* :mod:`.env`: the process count torchrun set (no torch import, for ``mstar plan``).
"""
