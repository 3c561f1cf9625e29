-- Pulled work: a lease is looked up by its id (heartbeats, completions), and claims look for
-- queued, unleased spokes oldest first.
CREATE INDEX spokes_by_lease ON spokes (lease_id) WHERE lease_id IS NOT NULL;
CREATE INDEX spokes_queued ON spokes (dispatched_at) WHERE status = 'dispatched' AND lease_id IS NULL;
