-- Tickets resolved before resolved_at existed (002) kept it NULL, and the closing worker's
-- query (resolved_at <= cutoff) never found them: they stayed resolved for good, and their
-- customers' retention (every ticket closed) never began. Their last change is when they were
-- resolved, as 002 says a reader should take it.
UPDATE tickets SET resolved_at = updated_at WHERE status = 'resolved' AND resolved_at IS NULL;
