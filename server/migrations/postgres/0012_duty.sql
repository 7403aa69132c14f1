-- Whether a courier works now, and until when: the planner gives work only
-- to couriers on duty, within their shift.
ALTER TABLE couriers ADD COLUMN on_duty BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE couriers ADD COLUMN duty_since TIMESTAMPTZ;
ALTER TABLE couriers ADD COLUMN shift_ends_at TIMESTAMPTZ;
