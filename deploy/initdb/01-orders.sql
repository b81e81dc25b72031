-- The legacy orders table the default mapping expects (docker-compose creates it on first start).
CREATE TABLE IF NOT EXISTS public.orders (
    id bigint PRIMARY KEY,
    order_number text NOT NULL,
    customer_email text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    status text NOT NULL,
    order_date date NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    notes text
);
