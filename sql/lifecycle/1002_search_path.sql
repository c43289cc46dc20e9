-- The lifecycle functions get search_path "pg_catalog, pg_temp" like every mailroom
-- function (see 0008_security.sql for why pg_temp must be listed last). token_created()
-- runs inside the transaction of whoever inserts a token and calls the SECURITY DEFINER
-- enqueue(); none of them may resolve a type or relation from the temporary schema.
ALTER FUNCTION mailroom.new_token_secret() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.new_token_code() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.account_provisioned() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.account_status_changed() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.token_created() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION mailroom.token_consumed() SET search_path = pg_catalog, pg_temp;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA mailroom FROM PUBLIC;
