-- Every update of a spoke records its transaction in changed_xid, whatever statement makes it
-- (drivers on every replica read changes by it; see 0003_work_ledger.sql).
CREATE FUNCTION spokehub_spoke_changed() RETURNS trigger AS $$
BEGIN
    NEW.changed_xid := pg_current_xact_id()::text::bigint;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER spokes_changed BEFORE UPDATE ON spokes
    FOR EACH ROW EXECUTE FUNCTION spokehub_spoke_changed();
