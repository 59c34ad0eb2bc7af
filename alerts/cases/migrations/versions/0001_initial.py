"""Every table of the case database: cases, their hours (with the minute evidence),
the append-only case and mark audit logs, marks, enterprise reports, deadlines, measures,
penalties, and the alert engine's `alerts` and `alert_hours`.

Revision ID: 0001_initial
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001_initial'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alert_hours',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('hour_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('fingerprint', 'hour_end', name=op.f('pk_alert_hours'))
    )
    op.create_table('cases',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('outlet', sa.String(length=128), nullable=False),
    sa.Column('enterprise', sa.Text(), nullable=False),
    sa.Column('permit', sa.String(length=128), nullable=True),
    sa.Column('pollutant', sa.String(length=32), nullable=False),
    sa.Column('limit_value', sa.Float(), nullable=False),
    sa.Column('limit_source', sa.Text(), nullable=False),
    sa.Column('reference_o2', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('case_number', sa.String(length=128), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('case_number', name=op.f('uq_cases_case_number'))
    )
    op.create_index('ix_cases_status', 'cases', ['status'], unique=False)
    op.create_index('uq_cases_open_outlet_pollutant', 'cases', ['outlet', 'pollutant'], unique=True, sqlite_where=sa.text("status NOT IN ('dismissed', 'closed')"), postgresql_where=sa.text("status NOT IN ('dismissed', 'closed')"))
    op.create_table('marks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('outlet', sa.String(length=128), nullable=False),
    sa.Column('pollutant', sa.String(length=32), nullable=True),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('evidence_ref', sa.Text(), nullable=True),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('removed_by', sa.Text(), nullable=True),
    sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('removed_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_marks'))
    )
    op.create_index('ix_marks_outlet', 'marks', ['outlet'], unique=False)
    op.create_table('alerts',
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('alertname', sa.String(length=128), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('annotations', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('active_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('case_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_alerts_case_id_cases')),
    sa.PrimaryKeyConstraint('fingerprint', name=op.f('pk_alerts'))
    )
    op.create_index('ix_alerts_state', 'alerts', ['state'], unique=False)
    op.create_table('case_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by', sa.Text(), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('from_state', sa.String(length=32), nullable=True),
    sa.Column('to_state', sa.String(length=32), nullable=True),
    sa.Column('event_date', sa.Date(), nullable=True),
    sa.Column('note', sa.Text(), server_default='', nullable=False),
    sa.Column('refs', sa.JSON(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_events_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_events'))
    )
    op.create_index('ix_case_events_case_id', 'case_events', ['case_id'], unique=False)
    op.create_table('case_hours',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('hour_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('avg', sa.Float(), nullable=True),
    sa.Column('avg_o2corr', sa.Float(), nullable=True),
    sa.Column('o2', sa.Float(), nullable=True),
    sa.Column('valid_minutes', sa.Integer(), nullable=False),
    sa.Column('limit_value', sa.Float(), nullable=True),
    sa.Column('exceeded', sa.Boolean(), nullable=False),
    sa.Column('minutes', sa.JSON(), nullable=False),
    sa.Column('mark_id', sa.Integer(), nullable=True),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('withdrawn_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_hours_case_id_cases')),
    sa.ForeignKeyConstraint(['mark_id'], ['marks.id'], name=op.f('fk_case_hours_mark_id_marks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_case_hours')),
    sa.UniqueConstraint('case_id', 'hour_end', name=op.f('uq_case_hours_case_id_hour_end'))
    )
    op.create_table('deadlines',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('met_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancelled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_deadlines_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deadlines'))
    )
    op.create_index('ix_deadlines_case_id', 'deadlines', ['case_id'], unique=False)
    op.create_table('enterprise_reports',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_by', sa.Text(), nullable=True),
    sa.Column('note', sa.Text(), server_default='', nullable=False),
    sa.Column('refs', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_enterprise_reports_case_id_cases')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_enterprise_reports'))
    )
    op.create_index('ix_enterprise_reports_case_id', 'enterprise_reports', ['case_id'], unique=False)
    op.create_table('mark_events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('mark_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by', sa.Text(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('note', sa.Text(), server_default='', nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['mark_id'], ['marks.id'], name=op.f('fk_mark_events_mark_id_marks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mark_events'))
    )
    op.create_index('ix_mark_events_mark_id', 'mark_events', ['mark_id'], unique=False)
    op.create_table('measures',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('end_date', sa.Date(), nullable=True),
    sa.Column('doc_number', sa.Text(), nullable=True),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('amount', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_measures_case_id_cases')),
    sa.ForeignKeyConstraint(['event_id'], ['case_events.id'], name=op.f('fk_measures_event_id_case_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measures'))
    )
    op.create_index('ix_measures_case_id', 'measures', ['case_id'], unique=False)
    op.create_table('penalties',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('case_id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('served_date', sa.Date(), nullable=False),
    sa.Column('reinspected_date', sa.Date(), nullable=False),
    sa.Column('days', sa.Integer(), nullable=False),
    sa.Column('discharge_stopped', sa.Boolean(), nullable=False),
    sa.Column('daily_amount', sa.Float(), nullable=True),
    sa.Column('total_amount', sa.Float(), nullable=True),
    sa.Column('citation', sa.JSON(), nullable=True),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_penalties_case_id_cases')),
    sa.ForeignKeyConstraint(['event_id'], ['case_events.id'], name=op.f('fk_penalties_event_id_case_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_penalties'))
    )
    op.create_index('ix_penalties_case_id', 'penalties', ['case_id'], unique=False)

    _append_only_triggers()


# The audit logs are append-only in the database itself, not only by convention: the
# store has no function that updates or deletes them, and these triggers refuse it.
_APPEND_ONLY = ("case_events", "mark_events")


def _append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in _APPEND_ONLY:
        if dialect == "sqlite":
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
        elif dialect == "postgresql":
            op.execute(f"""CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION '{table} is append-only'; END $$""")
            op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                       f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")


def _drop_append_only_triggers() -> None:
    dialect = op.get_bind().dialect.name
    for table in _APPEND_ONLY:
        if dialect == "sqlite":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
        elif dialect == "postgresql":
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only() CASCADE")


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_index('ix_penalties_case_id', table_name='penalties')
    op.drop_table('penalties')
    op.drop_index('ix_measures_case_id', table_name='measures')
    op.drop_table('measures')
    op.drop_index('ix_mark_events_mark_id', table_name='mark_events')
    op.drop_table('mark_events')
    op.drop_index('ix_enterprise_reports_case_id', table_name='enterprise_reports')
    op.drop_table('enterprise_reports')
    op.drop_index('ix_deadlines_case_id', table_name='deadlines')
    op.drop_table('deadlines')
    op.drop_table('case_hours')
    op.drop_index('ix_case_events_case_id', table_name='case_events')
    op.drop_table('case_events')
    op.drop_index('ix_alerts_state', table_name='alerts')
    op.drop_table('alerts')
    op.drop_index('ix_marks_outlet', table_name='marks')
    op.drop_table('marks')
    op.drop_index('uq_cases_open_outlet_pollutant', table_name='cases')
    op.drop_index('ix_cases_status', table_name='cases')
    op.drop_table('cases')
    op.drop_table('alert_hours')
