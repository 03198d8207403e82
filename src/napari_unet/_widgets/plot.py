"""The Fine-tune widget's live plot: loss and validation score against training time."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget


class _Plot(QWidget):
    """Loss and validation score against training time, painted with QPainter.

    Cheap to redraw (a few polylines), so the plot never holds up the event loop.
    Loss (orange) is scaled to its maximum; the validation score (blue dots) and the base
    model's score (dashed) use the 0..1 axis on the right.
    """

    LOSS = QColor(240, 160, 64)
    VAL = QColor(64, 192, 240)
    FG = QColor(214, 208, 206)

    def __init__(self):
        super().__init__()
        self.setMinimumHeight(130)
        self.clear()

    def clear(self):
        self.t, self.loss, self.vt, self.val = [], [], [], []
        self.base = None
        self.update()

    def add(self, p):
        if p.step == 0:
            self.base = p.val_score
            return
        if np.isfinite(p.loss):
            self.t.append(p.elapsed)
            self.loss.append(p.loss)
        if p.val_score is not None:
            self.vt.append(p.elapsed)
            self.val.append(p.val_score)

    def draw(self):
        self.update()

    def paintEvent(self, event):
        qp = QPainter(self)
        qp.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        fm = qp.fontMetrics()
        left, right, top, bottom = 8, 34, 16, fm.height() + 6
        pw, ph = max(w - left - right, 10), max(h - top - bottom, 10)
        qp.setPen(QPen(self.FG, 1))
        qp.drawRect(left, top, pw, ph)
        tmax = max(self.t[-1] if self.t else 0.0, self.vt[-1] if self.vt else 0.0, 1.0)
        lmax = max(self.loss) if self.loss else 1.0

        def X(t):
            return left + pw * t / tmax

        def Y(v):  # v in 0..1
            return top + ph * (1.0 - min(max(v, 0.0), 1.0))

        qp.drawText(left, h - 4, "0 s")
        label = f"{tmax:.0f} s"
        qp.drawText(left + pw - fm.horizontalAdvance(label), h - 4, label)
        for v in (0.0, 0.5, 1.0):
            qp.drawText(left + pw + 4, int(Y(v)) + fm.ascent() // 2, f"{v:g}")
        qp.setPen(QPen(self.LOSS, 1))
        qp.drawText(left + 2, top - 4, "loss")
        qp.setPen(QPen(self.VAL, 1))
        qp.drawText(left + 40, top - 4, "validation score")
        if self.base is not None:
            pen = QPen(self.VAL, 1, Qt.PenStyle.DashLine)
            qp.setPen(pen)
            qp.drawLine(QPointF(left, Y(self.base)), QPointF(left + pw, Y(self.base)))
        if len(self.t) > 1:
            step = max(1, len(self.t) // (2 * pw))  # at most ~2 points per pixel
            pts = [QPointF(X(t), Y(v / lmax)) for t, v in zip(self.t[::step], self.loss[::step])]
            qp.setPen(QPen(self.LOSS, 1))
            qp.drawPolyline(QPolygonF(pts))
        if self.vt:
            pts = [QPointF(X(t), Y(v)) for t, v in zip(self.vt, self.val)]
            qp.setPen(QPen(self.VAL, 1.5))
            if len(pts) > 1:
                qp.drawPolyline(QPolygonF(pts))
            qp.setBrush(self.VAL)
            for pt in pts:
                qp.drawEllipse(pt, 2.5, 2.5)
        qp.end()
