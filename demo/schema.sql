-- The demo's application: a small shop whose background work runs as jobq
-- jobs.  Loaded into a fresh database by scripts/demo.sh.
CREATE EXTENSION jobq;

CREATE ROLE shop_app NOLOGIN;            -- the application's role
CREATE SCHEMA shop AUTHORIZATION shop_app;
SET ROLE shop_app;

CREATE TABLE shop.orders (
    id       serial PRIMARY KEY,
    customer text NOT NULL,
    amount   numeric(10,2) NOT NULL,
    placed   timestamptz NOT NULL DEFAULT now(),
    paid     timestamptz
);
CREATE TABLE shop.outbox (order_id int, kind text, sent timestamptz DEFAULT clock_timestamp());
CREATE TABLE shop.reports (day int PRIMARY KEY, orders int, built timestamptz DEFAULT clock_timestamp());

-- fast: write a receipt to the outbox
CREATE FUNCTION shop.send_receipt(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO shop.outbox (order_id, kind) VALUES ((payload->>'order')::int, 'receipt')
$$;

-- delayed: a reminder some seconds after the order
CREATE FUNCTION shop.send_reminder(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO shop.outbox (order_id, kind) VALUES ((payload->>'order')::int, 'reminder')
$$;

-- flaky: the payment gateway fails a third of the time; retried with backoff
CREATE FUNCTION shop.charge_card(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.33 THEN
        RAISE EXCEPTION 'payment gateway timed out for order %', payload->>'order'
            USING ERRCODE = '08006', HINT = 'The gateway is flaky; the job will be retried.';
    END IF;
    UPDATE shop.orders SET paid = clock_timestamp() WHERE id = (payload->>'order')::int;
END $$;

-- slowish: a report takes a while to build
CREATE FUNCTION shop.build_report(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.2);
    INSERT INTO shop.reports (day, orders)
    SELECT (payload->>'day')::int, count(*) FROM shop.orders;
END $$;

-- broken: an item the warehouse does not know fails every time (tried 3 times)
CREATE FUNCTION shop.sync_inventory(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'SKU % does not exist in the warehouse', payload->>'sku'
        USING DETAIL = 'The warehouse API answered 404.';
END $$;

-- a chain: pack an order, then ship it (the shipping link is dispatched
-- only when packing succeeded); a fragile parcel cannot be packed
CREATE FUNCTION shop.pack_order(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (payload->>'fragile')::boolean THEN
        PERFORM jobq.fail('order ' || (payload->>'order') || ' is fragile: pack it by hand');
        RETURN;
    END IF;
    INSERT INTO shop.outbox (order_id, kind) VALUES ((payload->>'order')::int, 'packed');
END $$;
CREATE FUNCTION shop.ship_order(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO shop.outbox (order_id, kind) VALUES ((payload->>'order')::int, 'shipped')
$$;

-- too slow: exceeds its timeout and fails saying so
CREATE FUNCTION shop.export_ledger(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(3);
END $$;

-- per-handler defaults, like the properties of a Laravel job class
SELECT jobq.register('shop.send_receipt', queue => 'high');
SELECT jobq.register('shop.send_reminder', queue => 'default');
SELECT jobq.register('shop.charge_card', queue => 'high', tries => 6, backoff => '300 ms');
SELECT jobq.register('shop.build_report', queue => 'low', timeout => '10 s');
SELECT jobq.register('shop.sync_inventory', queue => 'default', tries => 3, backoff => '500 ms');
SELECT jobq.register('shop.export_ledger', queue => 'low', tries => 2, timeout => '1 s');
SELECT jobq.register('shop.pack_order', queue => 'default', tries => 3);
SELECT jobq.register('shop.ship_order', queue => 'default');
RESET ROLE;
