"""Qt adapters over ``EpisodeListModel``: a table model and a sort/filter proxy that use
the model's own ``sort_key`` and ``matches``."""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt

from . import _compat  # noqa: F401  (first: guards a PySide6 refcount bug)
from .models import EpisodeListModel

_RIGHT = {"id", "run", "index", "seed", "steps", "total_reward", "size"}


class EpisodeTableModel(QAbstractTableModel):
    """Shows an ``EpisodeListModel``; follows its row signals (no model reset on refresh,
    so selection and scrolling survive)."""

    EPISODE_ID_ROLE = Qt.ItemDataRole.UserRole + 1

    def __init__(self, model: EpisodeListModel, parent=None):
        super().__init__(parent)
        self.model = model
        model.rows_about_to_be_inserted.connect(
            lambda a, b: self.beginInsertRows(QModelIndex(), a, b)
        )
        model.rows_inserted.connect(lambda a, b: self.endInsertRows())
        model.rows_about_to_be_removed.connect(
            lambda a, b: self.beginRemoveRows(QModelIndex(), a, b)
        )
        model.rows_removed.connect(lambda a, b: self.endRemoveRows())
        model.rows_changed.connect(
            lambda a, b: self.dataChanged.emit(
                self.index(a, 0), self.index(b, self.columnCount() - 1)
            )
        )

    def rowCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else self.model.row_count()

    def columnCount(self, parent=None) -> int:
        return 0 if parent is not None and parent.isValid() else self.model.column_count()

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.model.header(section)
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = self.model.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return self.model.display(row, index.column())
        if role == self.EPISODE_ID_ROLE:
            return row.id
        if role == Qt.ItemDataRole.TextAlignmentRole:
            key = self.model.columns[index.column()][0]
            if key in _RIGHT:
                return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ToolTipRole:
            if row.status == "recording":
                return "being recorded: open it to follow live"
            return self.model.exact(row, index.column())
        return None


class EpisodeFilterProxy(QSortFilterProxyModel):
    """Sorting and filtering through ``EpisodeListModel.sort_key`` / ``matches``."""

    def __init__(self, source: EpisodeTableModel, parent=None):
        super().__init__(parent)
        self.setSourceModel(source)
        self._text = ""

    def set_filter_text(self, text: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self._text = text
            self.endFilterChange()
        else:
            self._text = text
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        m: EpisodeListModel = self.sourceModel().model
        return m.matches(m.rows[source_row], self._text)

    def lessThan(self, left, right) -> bool:
        m: EpisodeListModel = self.sourceModel().model
        col = left.column()
        return m.sort_key(m.rows[left.row()], col) < m.sort_key(m.rows[right.row()], col)
