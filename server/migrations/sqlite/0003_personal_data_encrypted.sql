-- Personal data is encrypted at rest. Each subject (a contact person, a
-- courier) has its own data key, stored only wrapped by a master key that
-- lives outside the database; destroying the wrapped key erases the data.
-- Rows of the plaintext table are encrypted into the new one by the server
-- at start, then removed.
ALTER TABLE personal_data RENAME TO personal_data_plain;

CREATE TABLE subject_keys (
    subject_id BLOB PRIMARY KEY,
    key_id TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE personal_data (
    subject_id BLOB PRIMARY KEY,
    name_ct BLOB NOT NULL,
    phone_ct BLOB NOT NULL,
    -- Keyed HMAC of the normalised phone number, for lookup without plaintext.
    phone_index TEXT NOT NULL
);
CREATE INDEX personal_data_phone ON personal_data (phone_index);
