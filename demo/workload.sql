-- The demo's workload, dispatched by the application's role.  Each order
-- and its jobs are one transaction: the jobs exist only if the order does.
SET ROLE shop_app;

DO $$
DECLARE
    o int;
BEGIN
    FOR i IN 1..400 LOOP
        INSERT INTO shop.orders (customer, amount)
        VALUES ('customer ' || i, round((random() * 200)::numeric, 2))
        RETURNING id INTO o;
        PERFORM jobq.dispatch('shop.send_receipt', jsonb_build_object('order', o));
        PERFORM jobq.dispatch('shop.charge_card', jsonb_build_object('order', o));
        IF i % 10 = 0 THEN
            PERFORM jobq.dispatch('shop.send_reminder', jsonb_build_object('order', o),
                                  delay => (2 + i / 80) * interval '1 s');
        END IF;
        -- every 100th order is packed, then shipped: a chain of two jobs;
        -- the last one is fragile, so its chain stops at packing
        IF i % 100 = 0 THEN
            PERFORM jobq.dispatch_chain(jsonb_build_array(
                jsonb_build_object('job', 'shop.pack_order',
                                   'payload', jsonb_build_object('order', o, 'fragile', i = 400)),
                jsonb_build_object('job', 'shop.ship_order',
                                   'payload', jsonb_build_object('order', o))));
        END IF;
        -- an order that is rolled back leaves no job behind
        IF i % 50 = 0 THEN
            BEGIN
                INSERT INTO shop.orders (customer, amount) VALUES ('cancelled', 1)
                RETURNING id INTO o;
                PERFORM jobq.dispatch('shop.send_receipt', jsonb_build_object('order', o));
                RAISE EXCEPTION 'checkout cancelled';
            EXCEPTION WHEN raise_exception THEN NULL;
            END;
        END IF;
        COMMIT;
    END LOOP;
END $$;

SELECT count(jobq.dispatch('shop.build_report', jsonb_build_object('day', d)))
  FROM generate_series(1, 12) d;
SELECT count(jobq.dispatch('shop.sync_inventory', jsonb_build_object('sku', 'SKU-' || s)))
  FROM generate_series(901, 903) s;
SELECT jobq.dispatch('shop.export_ledger', '{"year": 2026}');
RESET ROLE;
