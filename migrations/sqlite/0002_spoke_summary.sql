-- The spoke's own summary of its current attempt, from its spoke_complete callback.
ALTER TABLE spokes ADD COLUMN summary TEXT;
