-- Retention by age walks a room's oldest messages in offset order (the
-- primary key) until the first one young enough to keep, so the index on
-- `ts` is not needed; every message written paid for it (make
-- bench-archive: 43,485 → 55,394 messages/s into PostgreSQL without it).
DROP INDEX IF EXISTS chat_messages_ts;
