\pset footer off
\echo
\echo '== What the workers did'
SELECT 'orders placed' AS what, count(*)::text AS n FROM shop.orders
UNION ALL SELECT 'orders paid (charge_card, retried on gateway errors)', count(*)::text FROM shop.orders WHERE paid IS NOT NULL
UNION ALL SELECT 'receipts sent', count(*)::text FROM shop.outbox WHERE kind = 'receipt'
UNION ALL SELECT 'reminders sent (delayed jobs)', count(*)::text FROM shop.outbox WHERE kind = 'reminder'
UNION ALL SELECT 'reminders sent early', count(*)::text FROM shop.outbox o JOIN shop.orders r ON r.id = o.order_id
                                                     WHERE o.kind = 'reminder' AND o.sent < r.placed + interval '2 s'
UNION ALL SELECT 'receipts of rolled-back orders', count(*)::text FROM shop.outbox o
                                                     LEFT JOIN shop.orders r ON r.id = o.order_id WHERE r.id IS NULL
UNION ALL SELECT 'orders packed, then shipped (chains)', count(*)::text FROM shop.outbox WHERE kind = 'shipped'
UNION ALL SELECT 'reports built', count(*)::text FROM shop.reports
UNION ALL SELECT 'jobs still queued', count(*)::text FROM jobq.jobs;

\echo
\echo '== Failed jobs (jobq.failed_jobs)'
SELECT job_id, job, payload, attempts, sqlstate, exception, chain_links_left AS links_left
  FROM jobq.failed_jobs ORDER BY failed_at;
