"""Alembic environment: the engine is handed in by loupe.core.cases.db, never read from an ini file."""

import sqlalchemy as sa
from alembic import context

from loupe.core.cases.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Re-creating a referenced table (batch mode) drops it: SQLite allows that only with foreign key
        # enforcement off, which it ignores inside a transaction, so it is switched before one begins.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite)
    with context.begin_transaction():
        context.run_migrations()
        if sqlite and (broken := connection.execute(sa.text("PRAGMA foreign_key_check")).fetchall()):
            raise RuntimeError(f"migration left {len(broken)} rows with a dangling foreign key")
    connection.commit()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
