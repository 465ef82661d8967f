-- What the cloud's ring event named: the call's id (outgoing calls) and the capture taken when it rang;
-- and the video quality its monitor viewer had at the end (JSON: fps, bitrate_bps, packet_loss, rtt_ms;
-- NULL when nobody watched the call's monitor URL).
ALTER TABLE calls ADD COLUMN call_id TEXT NOT NULL DEFAULT '';
ALTER TABLE calls ADD COLUMN capture_id INTEGER;
ALTER TABLE calls ADD COLUMN video TEXT;
