-- How a run reaches its spokes: `push` (a workflow dispatch each) or `pull` (queued for
-- workers that claim them).
ALTER TABLE runs ADD COLUMN mode TEXT NOT NULL DEFAULT 'push';
