"""Which metadata objects hold which tables: the application's and the toolkit's."""

from __future__ import annotations

from sqlalchemy import MetaData

from ._models import Base

__all__ = ["all_metadata", "toolkit_metadata"]

#: The toolkit's own tables (the audit log); created by asyncdb's Alembic migrations.
toolkit_metadata = MetaData(naming_convention=Base.metadata.naming_convention)


def all_metadata() -> list[MetaData]:
    """The application's ``Base.metadata`` and the toolkit's metadata, in creation order."""
    return [toolkit_metadata, Base.metadata]
