"""The Segment widget's *Run on folder...*: every image of a folder segmented in the
background with the widget's model and settings, into ``<folder>/napari-unet/``, with
progress, Cancel (the Run button), files done before skipped, an unreadable file reported
while the others go on, and a summary (objects per image) in ``summary.csv`` and the status
line. The work itself is :func:`napari_unet.core.batch.run_folder`."""

from __future__ import annotations

import time
from pathlib import Path

from napari.qt.threading import create_worker
from napari.utils.notifications import show_info

OUTPUT_FOLDER = "napari-unet"


class FolderRunMixin:
    """Mixed into :class:`.segment.SegmentWidget` (uses its Run button, progress, status,
    cancel event, segmenter cache and error reporting)."""

    def _on_folder(self, *_):
        from qtpy.QtWidgets import QFileDialog

        if self.running:
            return
        folder = QFileDialog.getExistingDirectory(self.native, "Segment every image of a folder")
        if folder:
            self.run_folder(folder)

    def run_folder(self, folder, output=None):
        """Segment every image of ``folder`` into ``output`` (default ``folder/napari-unet``)."""
        from ..core.batch import folder_images

        if self.running:
            show_info("A segmentation is running: wait for it or cancel it first")
            return None
        folder = Path(folder)
        files = folder_images(folder) if folder.is_dir() else []
        if not files:
            show_info(f"No images in {folder} (TIFF, PNG, JPEG or BMP; this tool's own outputs are left out)")
            return None
        out = Path(output) if output else folder / OUTPUT_FOLDER
        model, overrides = self.model.value, self._overrides()
        diameter = "auto" if self.estimate.value else (self.diameter.value or None)
        cancel, relay = self._cancel, self._relay

        def work():
            from ..core.batch import run_folder

            seg = self._segmenter(model)
            seg.threshold, seg.min_size = overrides
            seg.keep_probs = False
            rows = []
            n = len(files)
            relay.progress.emit(0.0, f"0/{n} images")
            for row in run_folder(seg, files, out, diameter, cancelled=cancel.is_set):
                rows.append(row)
                relay.progress.emit(len(rows) / n, f"{len(rows)}/{n}: {row['file']}: {row['status']}")
            return rows

        self._cancel.clear()
        self._t0 = time.perf_counter()
        self.run_button.text = "Cancel"
        self.folder_button.enabled = False
        self.progress_bar.value = 0
        self.progress_bar.visible = True
        self.status.value = f"segmenting {len(files)} images of {folder.name} ..."
        worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda rows: self._on_folder_done(rows, len(files), out))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._open_activity(f"U-Net: segmenting the images of '{folder.name}'")
        worker.start()
        return worker

    def _on_folder_done(self, rows: list[dict], total: int, out: Path):
        self.last_summary = rows
        done = [r for r in rows if r["status"] == "done"]
        skipped = [r for r in rows if r["status"].startswith("skipped")]
        failed = [r for r in rows if r["status"].startswith("failed")]
        cells = sum(r["cells"] for r in rows if r["cells"] is not None)
        parts = [f"{len(done)} segmented"]
        if skipped:
            parts.append(f"{len(skipped)} skipped (done before)")
        if failed:
            parts.append(f"{len(failed)} failed ({', '.join(r['file'] for r in failed[:3])}{', ...' if len(failed) > 3 else ''})")
        if len(rows) < total:
            parts.append(f"cancelled after {len(rows)} of {total}")
        text = f"{'; '.join(parts)}: {cells} cells in all -> {out} (per image: summary.csv)"
        try:
            self.status.value = text
        except RuntimeError:  # the dock is gone
            return
        show_info(f"U-Net folder run: {text}")
