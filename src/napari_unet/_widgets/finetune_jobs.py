"""What the Fine-tune widget runs in worker threads: the training job (a generator of
progress and previews), a one-off preview, and the warm-up of torch's imports."""

from __future__ import annotations

import threading


class _Job:
    """State shared by the GUI thread and the training thread (no reference to the viewer)."""

    def __init__(self):
        self.request = None  # latest PreviewRequest, set by the GUI thread
        self.trainer = None
        self.done = threading.Event()
        self.stop_requested = False
        self.closing = False  # the viewer is closing: skip the final preview

    def stop(self):
        self.stop_requested = True
        trainer = getattr(self, "trainer", None)  # None also while garbage collection tears it down
        if trainer is not None:
            trainer.stop()


def _train_job(job: _Job, images, annotations, rgbs, base, budget, threads):
    """The worker's generator: build the trainer, then yield its progress and previews."""
    try:
        from ..core.finetune import FinetuneSession, make_finetuner

        trainer, info = make_finetuner(images, annotations, base, budget, rgb=rgbs)
        job.trainer = trainer
        if job.stop_requested:
            trainer.stop()
        yield ("ready", trainer, info)
        session = FinetuneSession(trainer, info, request=lambda: job.request, threads=threads)
        yield from session.run()
        # the best weights are back in the model: show what Stop kept
        if not job.closing:
            final = session.preview_now()
            if final is not None:
                yield ("final", final)
    finally:
        job.done.set()


def _warm_up(done: threading.Event):
    """Import torch and what its optimiser pulls in (``torch._dynamo``) ahead of training.

    The first optimiser step imports ``torch._dynamo``, whose import holds the GIL in long
    stretches; done here, right after the widget opens, it cannot stall the viewer during
    training.
    """
    try:
        import torch
        import torch._dynamo  # noqa: F401

        from ..core import finetune, training  # noqa: F401
    except Exception:  # noqa: BLE001 - only a warm-up; training imports these anyway
        pass
    finally:
        done.set()


def start_warm_up() -> threading.Event:
    """Start the warm-up imports in a daemon thread; the event is set when they are done
    (owned by the widget that asked: a second widget's warm-up finds the modules imported)."""
    done = threading.Event()
    threading.Thread(target=_warm_up, args=(done,), name="napari-unet warm-up", daemon=True).start()
    return done


def _preview_job(trainer, info, request):
    from ..core.finetune import FinetuneSession

    return FinetuneSession(trainer, info, request=lambda: request).preview_now()
