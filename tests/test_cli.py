import gc
import os
import signal

import pytest

from retino.stage import catching_interrupts


class _SlowFinaliser:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while a finaliser runs


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_swallows_is_still_honoured_by_check():
    with catching_interrupts() as interrupts:
        _SlowFinaliser()  # the KeyboardInterrupt raised in __del__ is only printed
        gc.collect()
        assert interrupts.received
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
