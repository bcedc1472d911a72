-- The policy versions this service has put in force, and when (by its clock): `desk policy
-- history`. Written by shared.policyfile.PolicySchedule.adopt in the transaction that first
-- decides under a version; its primary key makes that switch happen once per schema. The
-- service's role may read and insert rows, never change them (shared/privileges.py).

CREATE TABLE policy_history (
    version        text        PRIMARY KEY,
    approved_by    text,
    effective_from timestamptz,
    loaded_at      timestamptz NOT NULL,
    source         text        NOT NULL
);
