-- A data directory made by orderbus 0.1 (before migrations): `orderbus up --demo`, one order placed
-- and moved to preparing, stopped with SIGTERM; then `sqlite3 orderbus.db .dump`. No alembic_version table.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE restaurant (
	id INTEGER NOT NULL,
	name VARCHAR NOT NULL,
	event_seq INTEGER NOT NULL,
	PRIMARY KEY (id)
);
INSERT INTO restaurant VALUES(1,'Demo Bistro',15);
CREATE TABLE user (
	id INTEGER NOT NULL,
	restaurant_id INTEGER,
	email VARCHAR NOT NULL,
	name VARCHAR NOT NULL,
	role VARCHAR NOT NULL,
	password_hash VARCHAR NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
INSERT INTO user VALUES(1,1,'admin@demo.orderbus.dev','Demo Admin','admin','$argon2id$v=19$m=65536,t=3,p=4$sehSpn2HU6MNGzIW8UKzDQ$fk65ucpymrBcdO+qMGNAKCNQxztKDVah1Y+CbZbBaQw');
CREATE TABLE category (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	name VARCHAR NOT NULL,
	position INTEGER NOT NULL,
	station VARCHAR,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
INSERT INTO category VALUES(1,1,'Burgers',1,'grill');
INSERT INTO category VALUES(2,1,'Drinks',2,'bar');
CREATE TABLE menu (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	name VARCHAR NOT NULL,
	active BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
INSERT INTO menu VALUES(1,1,'Dinner',1);
CREATE TABLE orders (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	status VARCHAR NOT NULL,
	table_name VARCHAR,
	pickup_name VARCHAR,
	server_name VARCHAR,
	notes VARCHAR NOT NULL,
	total_cents INTEGER NOT NULL,
	refunded_cents INTEGER NOT NULL,
	version INTEGER NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
INSERT INTO orders VALUES(1,1,'preparing','T4',NULL,NULL,'',2500,0,2,'2026-12-02 06:33:57.156827','2026-12-02 06:33:57.373370');
CREATE TABLE notification (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	kind VARCHAR NOT NULL,
	title VARCHAR NOT NULL,
	body VARCHAR NOT NULL,
	read BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
CREATE TABLE outbox_event (
	id INTEGER NOT NULL,
	event_id VARCHAR NOT NULL,
	restaurant_id INTEGER NOT NULL,
	seq INTEGER NOT NULL,
	type VARCHAR NOT NULL,
	envelope JSON NOT NULL,
	created_at DATETIME NOT NULL,
	published_at DATETIME,
	PRIMARY KEY (id),
	UNIQUE (restaurant_id, seq),
	UNIQUE (event_id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id)
);
INSERT INTO outbox_event VALUES(1,'8d330465-0685-4e64-b232-e0b2b6ae6087',1,1,'category_updated','{"v": 1, "id": "8d330465-0685-4e64-b232-e0b2b6ae6087", "seq": 1, "type": "category_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:43.995Z", "data": {"action": "created", "category": {"restaurant_id": 1, "name": "Burgers", "position": 1, "station": "grill", "id": 1}}}','2026-12-02 06:33:43.995499','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(2,'54ae2ac6-9506-4863-818a-fef05b31603f',1,2,'category_updated','{"v": 1, "id": "54ae2ac6-9506-4863-818a-fef05b31603f", "seq": 2, "type": "category_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.033Z", "data": {"action": "created", "category": {"restaurant_id": 1, "name": "Drinks", "position": 2, "station": "bar", "id": 2}}}','2026-12-02 06:33:44.033820','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(3,'49a1c5a1-249b-4c21-a304-c910484de166',1,3,'menu_updated','{"v": 1, "id": "49a1c5a1-249b-4c21-a304-c910484de166", "seq": 3, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.090Z", "data": {"action": "created", "menu": {"restaurant_id": 1, "name": "Dinner", "active": true, "id": 1}}}','2026-12-02 06:33:44.090970','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(4,'9797f8ef-e5b0-4006-afb0-edd0ef6ad95a',1,4,'menu_updated','{"v": 1, "id": "9797f8ef-e5b0-4006-afb0-edd0ef6ad95a", "seq": 4, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.157Z", "data": {"action": "created", "menu_item": {"id": 1, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Classic Burger", "description": "", "price_cents": 1250, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 40, "damaged_quantity": 0, "low_stock_threshold": 10, "low_stock_clear_level": 13, "low_stock_alerted": false, "unit_weight_grams": 120.0, "available_quantity": 40}}}','2026-12-02 06:33:44.157572','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(5,'98acd36b-de18-403b-954e-812e254ccc94',1,5,'inventory_updated','{"v": 1, "id": "98acd36b-de18-403b-954e-812e254ccc94", "seq": 5, "type": "inventory_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.194Z", "data": {"item": {"id": 1, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Classic Burger", "description": "", "price_cents": 1250, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 40, "damaged_quantity": 0, "low_stock_threshold": 10, "low_stock_clear_level": 13, "low_stock_alerted": false, "unit_weight_grams": 120.0, "available_quantity": 40}, "reason": "created"}}','2026-12-02 06:33:44.195629','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(6,'30dc5eca-a686-4c2b-8e61-1f863b724a3b',1,6,'menu_updated','{"v": 1, "id": "30dc5eca-a686-4c2b-8e61-1f863b724a3b", "seq": 6, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.242Z", "data": {"action": "created", "menu_item": {"id": 2, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Veggie Burger", "description": "", "price_cents": 1150, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 12, "damaged_quantity": 0, "low_stock_threshold": 5, "low_stock_clear_level": 8, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 12}}}','2026-12-02 06:33:44.243107','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(7,'461b47bb-3f32-4340-9b57-5468331a42ae',1,7,'inventory_updated','{"v": 1, "id": "461b47bb-3f32-4340-9b57-5468331a42ae", "seq": 7, "type": "inventory_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.267Z", "data": {"item": {"id": 2, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Veggie Burger", "description": "", "price_cents": 1150, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 12, "damaged_quantity": 0, "low_stock_threshold": 5, "low_stock_clear_level": 8, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 12}, "reason": "created"}}','2026-12-02 06:33:44.267532','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(8,'f9110884-852c-4e01-8b86-007a518168cd',1,8,'menu_updated','{"v": 1, "id": "f9110884-852c-4e01-8b86-007a518168cd", "seq": 8, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.296Z", "data": {"action": "created", "menu_item": {"id": 3, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Fries", "description": "", "price_cents": 450, "available": true, "available_days": [], "enable_stock_tracking": false, "stock_quantity": 0, "damaged_quantity": 0, "low_stock_threshold": null, "low_stock_clear_level": null, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 0}}}','2026-12-02 06:33:44.296908','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(9,'f18e767c-51a3-465a-ab66-66bfd372517c',1,9,'menu_updated','{"v": 1, "id": "f18e767c-51a3-465a-ab66-66bfd372517c", "seq": 9, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.312Z", "data": {"action": "created", "menu_item": {"id": 4, "restaurant_id": 1, "menu_id": 1, "category_id": 2, "name": "Lemonade", "description": "", "price_cents": 350, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 30, "damaged_quantity": 0, "low_stock_threshold": 8, "low_stock_clear_level": 11, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 30}}}','2026-12-02 06:33:44.312690','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(10,'be43c613-76d4-436e-948d-78191c2ed5cb',1,10,'inventory_updated','{"v": 1, "id": "be43c613-76d4-436e-948d-78191c2ed5cb", "seq": 10, "type": "inventory_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.333Z", "data": {"item": {"id": 4, "restaurant_id": 1, "menu_id": 1, "category_id": 2, "name": "Lemonade", "description": "", "price_cents": 350, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 30, "damaged_quantity": 0, "low_stock_threshold": 8, "low_stock_clear_level": 11, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 30}, "reason": "created"}}','2026-12-02 06:33:44.343971','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(11,'0f00e120-2281-499e-a13c-ef378a0c76fc',1,11,'menu_updated','{"v": 1, "id": "0f00e120-2281-499e-a13c-ef378a0c76fc", "seq": 11, "type": "menu_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:44.357Z", "data": {"action": "created", "menu_item": {"id": 5, "restaurant_id": 1, "menu_id": 1, "category_id": 2, "name": "Espresso", "description": "", "price_cents": 300, "available": true, "available_days": [], "enable_stock_tracking": false, "stock_quantity": 0, "damaged_quantity": 0, "low_stock_threshold": null, "low_stock_clear_level": null, "low_stock_alerted": false, "unit_weight_grams": null, "available_quantity": 0}}}','2026-12-02 06:33:44.357906','2026-12-02 06:33:46.842030');
INSERT INTO outbox_event VALUES(12,'2ab7bd9f-0c96-4f73-be66-69c1be6f4ef8',1,12,'new_order','{"v": 1, "id": "2ab7bd9f-0c96-4f73-be66-69c1be6f4ef8", "seq": 12, "type": "new_order", "restaurant_id": 1, "ts": "2026-12-02T06:33:57.230Z", "data": {"order": {"id": 1, "restaurant_id": 1, "status": "pending", "table_name": "T4", "pickup_name": null, "server_name": null, "notes": "", "total_cents": 2500, "refunded_cents": 0, "version": 1, "created_at": "2026-12-02T06:33:57.156827Z", "updated_at": "2026-12-02T06:33:57.156867Z", "items": [{"id": 1, "menu_item_id": 1, "name": "Classic Burger", "quantity": 2, "unit_price_cents": 1250, "modifiers": ["no onion"], "notes": "", "course": null, "station": "grill"}]}}}','2026-12-02 06:33:57.246662','2026-12-02 06:33:57.331016');
INSERT INTO outbox_event VALUES(13,'fbfc48b8-9a29-4132-97f8-1d8f2c111331',1,13,'kitchen_ticket','{"v": 1, "id": "fbfc48b8-9a29-4132-97f8-1d8f2c111331", "seq": 13, "type": "kitchen_ticket", "restaurant_id": 1, "ts": "2026-12-02T06:33:57.255Z", "data": {"ticket": {"id": 1, "kind": "new", "order_id": 1, "version": 1, "station": "grill", "created_at": "2026-12-02T06:33:57.250Z", "table_name": "T4", "pickup_name": null, "server_name": null, "notes": "", "items": [{"name": "Classic Burger", "quantity": 2, "modifiers": ["no onion"], "notes": "", "course": null}]}}}','2026-12-02 06:33:57.255587','2026-12-02 06:33:57.331016');
INSERT INTO outbox_event VALUES(14,'cb6545a2-0872-4c7b-8c0f-8a9963c82d0f',1,14,'inventory_updated','{"v": 1, "id": "cb6545a2-0872-4c7b-8c0f-8a9963c82d0f", "seq": 14, "type": "inventory_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:57.259Z", "data": {"item": {"id": 1, "restaurant_id": 1, "menu_id": 1, "category_id": 1, "name": "Classic Burger", "description": "", "price_cents": 1250, "available": true, "available_days": [], "enable_stock_tracking": true, "stock_quantity": 38, "damaged_quantity": 0, "low_stock_threshold": 10, "low_stock_clear_level": 13, "low_stock_alerted": false, "unit_weight_grams": 120.0, "available_quantity": 38}, "reason": "order 1"}}','2026-12-02 06:33:57.260082','2026-12-02 06:33:57.331016');
INSERT INTO outbox_event VALUES(15,'53cb0f36-790c-4cc6-8b52-5cf37dd45aa5',1,15,'order_updated','{"v": 1, "id": "53cb0f36-790c-4cc6-8b52-5cf37dd45aa5", "seq": 15, "type": "order_updated", "restaurant_id": 1, "ts": "2026-12-02T06:33:57.400Z", "data": {"order": {"id": 1, "restaurant_id": 1, "status": "preparing", "table_name": "T4", "pickup_name": null, "server_name": null, "notes": "", "total_cents": 2500, "refunded_cents": 0, "version": 2, "created_at": "2026-12-02T06:33:57.156827Z", "updated_at": "2026-12-02T06:33:57.373370Z", "items": [{"id": 1, "menu_item_id": 1, "name": "Classic Burger", "quantity": 2, "unit_price_cents": 1250, "modifiers": ["no onion"], "notes": "", "course": null, "station": "grill"}]}, "change": "status"}}','2026-12-02 06:33:57.401155','2026-12-02 06:33:57.486502');
CREATE TABLE menu_item (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	menu_id INTEGER NOT NULL,
	category_id INTEGER,
	name VARCHAR NOT NULL,
	description VARCHAR NOT NULL,
	price_cents INTEGER NOT NULL,
	available BOOLEAN NOT NULL,
	available_days JSON NOT NULL,
	enable_stock_tracking BOOLEAN NOT NULL,
	stock_quantity INTEGER NOT NULL,
	damaged_quantity INTEGER NOT NULL,
	low_stock_threshold INTEGER,
	low_stock_clear_level INTEGER,
	low_stock_alerted BOOLEAN NOT NULL,
	unit_weight_grams FLOAT,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id),
	FOREIGN KEY(menu_id) REFERENCES menu (id),
	FOREIGN KEY(category_id) REFERENCES category (id)
);
INSERT INTO menu_item VALUES(1,1,1,1,'Classic Burger','',1250,1,'[]',1,38,0,10,13,0,120.0);
INSERT INTO menu_item VALUES(2,1,1,1,'Veggie Burger','',1150,1,'[]',1,12,0,5,8,0,NULL);
INSERT INTO menu_item VALUES(3,1,1,1,'Fries','',450,1,'[]',0,0,0,NULL,NULL,0,NULL);
INSERT INTO menu_item VALUES(4,1,1,2,'Lemonade','',350,1,'[]',1,30,0,8,11,0,NULL);
INSERT INTO menu_item VALUES(5,1,1,2,'Espresso','',300,1,'[]',0,0,0,NULL,NULL,0,NULL);
CREATE TABLE refund (
	id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	amount_cents INTEGER NOT NULL,
	reason VARCHAR NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);
CREATE TABLE ticket (
	id INTEGER NOT NULL,
	restaurant_id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	version INTEGER NOT NULL,
	station VARCHAR NOT NULL,
	kind VARCHAR NOT NULL,
	state VARCHAR NOT NULL,
	device_id VARCHAR,
	detail VARCHAR NOT NULL,
	created_at DATETIME NOT NULL,
	printed_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id),
	FOREIGN KEY(order_id) REFERENCES orders (id)
);
INSERT INTO ticket VALUES(1,1,1,1,'grill','new','sent',NULL,'','2026-12-02 06:33:57.250764',NULL);
CREATE TABLE order_item (
	id INTEGER NOT NULL,
	order_id INTEGER NOT NULL,
	menu_item_id INTEGER NOT NULL,
	name VARCHAR NOT NULL,
	quantity INTEGER NOT NULL,
	unit_price_cents INTEGER NOT NULL,
	modifiers JSON NOT NULL,
	notes VARCHAR NOT NULL,
	course VARCHAR,
	station VARCHAR,
	PRIMARY KEY (id),
	FOREIGN KEY(order_id) REFERENCES orders (id),
	FOREIGN KEY(menu_item_id) REFERENCES menu_item (id)
);
INSERT INTO order_item VALUES(1,1,1,'Classic Burger',2,1250,'["no onion"]','',NULL,'grill');
CREATE TABLE device (
	id VARCHAR NOT NULL,
	restaurant_id INTEGER NOT NULL,
	kind VARCHAR NOT NULL,
	name VARCHAR NOT NULL,
	station VARCHAR,
	presence VARCHAR NOT NULL,
	boot_id VARCHAR,
	last_seen DATETIME,
	item_id INTEGER,
	tare_grams FLOAT NOT NULL,
	revoked BOOLEAN NOT NULL,
	revoked_at DATETIME,
	created_at DATETIME NOT NULL,
	token_jti VARCHAR,
	token_expires_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(restaurant_id) REFERENCES restaurant (id),
	FOREIGN KEY(item_id) REFERENCES menu_item (id)
);
INSERT INTO device VALUES('printer-grill-1',1,'printer','Grill printer','grill','unknown',NULL,NULL,NULL,0.0,0,NULL,'2026-12-02 06:33:44.366442',NULL,NULL);
INSERT INTO device VALUES('printer-bar-1',1,'printer','Bar printer','bar','unknown',NULL,NULL,NULL,0.0,0,NULL,'2026-12-02 06:33:44.367384',NULL,NULL);
INSERT INTO device VALUES('kds-kitchen-1',1,'tablet','Kitchen display',NULL,'unknown',NULL,NULL,NULL,0.0,0,NULL,'2026-12-02 06:33:44.367785',NULL,NULL);
INSERT INTO device VALUES('scale-patty-1',1,'scale','Patty scale',NULL,'unknown',NULL,NULL,1,0.0,0,NULL,'2026-12-02 06:33:44.368190',NULL,NULL);
CREATE INDEX ix_user_restaurant_id ON user (restaurant_id);
CREATE UNIQUE INDEX ix_user_email ON user (email);
CREATE INDEX ix_category_restaurant_id ON category (restaurant_id);
CREATE INDEX ix_menu_restaurant_id ON menu (restaurant_id);
CREATE INDEX ix_orders_restaurant_id ON orders (restaurant_id);
CREATE INDEX ix_notification_restaurant_id ON notification (restaurant_id);
CREATE INDEX ix_outbox_event_restaurant_id ON outbox_event (restaurant_id);
CREATE INDEX ix_outbox_event_published_at ON outbox_event (published_at);
CREATE INDEX ix_menu_item_menu_id ON menu_item (menu_id);
CREATE INDEX ix_menu_item_restaurant_id ON menu_item (restaurant_id);
CREATE INDEX ix_refund_order_id ON refund (order_id);
CREATE INDEX ix_ticket_restaurant_id ON ticket (restaurant_id);
CREATE INDEX ix_ticket_state ON ticket (state);
CREATE INDEX ix_ticket_order_id ON ticket (order_id);
CREATE INDEX ix_order_item_order_id ON order_item (order_id);
CREATE INDEX ix_device_restaurant_id ON device (restaurant_id);
COMMIT;
