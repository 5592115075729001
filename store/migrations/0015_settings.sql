-- 0015_settings: queue settings read by SQL functions (both profiles).
--
-- Safe to run again.

-- Queue settings read by the SQL functions, so workers in any language need not know them.
CREATE OR REPLACE FUNCTION queue_setting(p_key text, p_default bigint) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value FROM queue_settings WHERE key = p_key), p_default)
$$;

CREATE OR REPLACE FUNCTION configure_queue(p_per_user_limit integer, p_max_task_attempts integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF p_per_user_limit IS NULL OR p_per_user_limit < 1 THEN
        RAISE EXCEPTION 'per_user_limit must be at least 1, got %', p_per_user_limit USING ERRCODE = '22023';
    END IF;
    IF p_max_task_attempts IS NULL OR p_max_task_attempts < 1 THEN
        RAISE EXCEPTION 'max_task_attempts must be at least 1, got %', p_max_task_attempts USING ERRCODE = '22023';
    END IF;
    INSERT INTO queue_settings (key, value)
    VALUES ('per_user_concurrency_limit', p_per_user_limit), ('max_task_attempts', p_max_task_attempts)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
    WHERE queue_settings.value IS DISTINCT FROM EXCLUDED.value;
    RETURN true;
END
$$;

-- The settings are read from the table directly (queue_settings); this reader was used by tests only.
DROP FUNCTION IF EXISTS queue_settings_json();

