"""Alembic environment: the engine is handed in by loupe.core.cases.db, never read from an ini file."""

from alembic import context

from loupe.core.cases.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
