-- When a session's access token was first used. A refresh token presented
-- again shortly after its exchange is a lost answer, not a theft, as long as
-- the pair it was exchanged for has never been used.
ALTER TABLE sessions ADD COLUMN used_at TEXT;
