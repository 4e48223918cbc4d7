-- The archive (issue 14): every message of every room, one lineage per
-- room, and where each room stands. One schema for PostgreSQL and SQLite
-- (BIGINT is SQLite's INTEGER affinity; ON CONFLICT is in both).

-- Where a room stands: its epoch and the highest offset archived. Read
-- when a room is first used, so a restarted process or a wiped Redis
-- continues the room's offsets in the same epoch.
CREATE TABLE chat_rooms (
    room        TEXT   NOT NULL PRIMARY KEY,
    epoch       TEXT   NOT NULL,
    last_offset BIGINT NOT NULL
);

-- A room's messages by offset. A row is written once per (room, offset);
-- the same offset again in another epoch (the store lost messages and the
-- room went on under a new epoch) replaces it: scroll-back shows the
-- history the room's members see now.
CREATE TABLE chat_messages (
    room       TEXT   NOT NULL,
    msg_offset BIGINT NOT NULL,
    epoch      TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    client_id  TEXT   NOT NULL,
    user_id    TEXT   NOT NULL,
    user_name  TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    ts         BIGINT NOT NULL,
    PRIMARY KEY (room, msg_offset)
);

-- Retention by age deletes the oldest messages of every room.
CREATE INDEX chat_messages_ts ON chat_messages (ts);
