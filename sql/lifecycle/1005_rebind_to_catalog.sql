-- 1005: the lifecycle tables' objects (accounts and tokens: the login length and address
-- CHECKs, the token secret and code CHECKs and defaults, mailroom.new_token_secret() and
-- mailroom.new_token_code(), whose `int8 % int4` a plant in public turned into 00000 for
-- every recovery code) rebuilt bound to pg_catalog if an older `mailroom migrate` bound
-- them elsewhere. 0024 (core, always applied first) already rebuilt every object of the
-- schema bound outside pg_catalog, these included; this runs the same rebuild again so
-- that the module's own history records it. A no-op on a clean install.
SELECT mailroom.rebind_to_catalog();
