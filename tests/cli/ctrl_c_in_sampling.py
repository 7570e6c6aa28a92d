"""``python ctrl_c_in_sampling.py ARGS...`` runs ``mstar ARGS...`` with Ctrl-C pressed when it
starts to sample: process 0 (of a multi-process launch too) sends SIGINT to its process group, as a
terminal does, at its first call of the sampler (``mstar sample``, ``mstar eval``, the sampling
after training in ``mstar run``). Start it in a session of its own (``start_new_session=True``).

The spawned processes of a launch run this file's top level again (as ``__mp_main__``), so they
sample through the same wrapper. Not a test module: the tests run it in a subprocess."""
import os
import signal

import mstar_engine.kinds.exponential as runs  # the exponential-family kind samples through its module's sample()

if os.getpgid(0) != os.getsid(0):
    raise SystemExit("ctrl_c_in_sampling.py signals its process group: start it with start_new_session=True")

_sample = runs.sample


def _pressed_while_sampling(*args, **kwargs):
    if os.environ.get("RANK", "0") == "0":
        os.killpg(os.getpgid(0), signal.SIGINT)
    return _sample(*args, **kwargs)


runs.sample = _pressed_while_sampling

if __name__ == "__main__":
    from mstar_cli.main import main
    main()
