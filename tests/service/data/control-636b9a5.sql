-- The control database as made by yippiemove at 636b9a5 (before issue 15): its
-- SQLAlchemy create_all, and a row in every table (tests/service/test_migrations.py).
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE users (
	id INTEGER NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	password_hash VARCHAR(200) NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO users VALUES(1,'alice@example.org','$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g',1700000000.4999999999);
CREATE TABLE mailbox_locks (
	mailbox VARCHAR(700) NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	since FLOAT NOT NULL, 
	PRIMARY KEY (mailbox)
);
INSERT INTO mailbox_locks VALUES('mail.example.net|993|dst','0123456789abcdef0123456789abcdef',1700000003.0);
CREATE TABLE active_orders (
	pair VARCHAR(1500) NOT NULL, 
	job_id VARCHAR(32) NOT NULL, 
	PRIMARY KEY (pair)
);
INSERT INTO active_orders VALUES('1|imap.example.org|src|mail.example.net|dst','0123456789abcdef0123456789abcdef');
CREATE TABLE web_sessions (
	id_hash VARCHAR(64) NOT NULL, 
	user_id INTEGER, 
	data JSON NOT NULL, 
	created FLOAT NOT NULL, 
	expires FLOAT NOT NULL, 
	PRIMARY KEY (id_hash)
);
INSERT INTO web_sessions VALUES('efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef',1,'{"csrf": "x"}',1700000000.0,1800000000.0);
CREATE TABLE auth_throttle (
	"key" VARCHAR(400) NOT NULL, 
	failures INTEGER NOT NULL, 
	last FLOAT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO auth_throttle VALUES('ip:192.0.2.1',2,1700000000.0);
CREATE TABLE pending_signups (
	token_hash VARCHAR(64) NOT NULL, 
	email VARCHAR(320) NOT NULL, 
	password_hash VARCHAR(200) NOT NULL, 
	expires FLOAT NOT NULL, 
	PRIMARY KEY (token_hash)
);
INSERT INTO pending_signups VALUES('1212121212121212121212121212121212121212121212121212121212121212','bob@example.org','$argon2id$x',1800000000.0);
CREATE TABLE api_tokens (
	id INTEGER NOT NULL, 
	user_id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	created FLOAT NOT NULL, 
	last_used FLOAT, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO api_tokens VALUES(1,1,'ci','abababababababababababababababababababababababababababababababab',1700000001.0,NULL);
CREATE TABLE jobs (
	id VARCHAR(32) NOT NULL, 
	user_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	source JSON NOT NULL, 
	dest JSON NOT NULL, 
	folders JSON, 
	created FLOAT NOT NULL, 
	started FLOAT, 
	finished FLOAT, 
	progress JSON NOT NULL, 
	report_path TEXT, 
	error TEXT, 
	lease_owner VARCHAR(300), 
	lease_expires FLOAT, 
	jail VARCHAR(100), 
	attempts INTEGER NOT NULL, 
	runs INTEGER NOT NULL, 
	cancel_requested BOOLEAN NOT NULL, 
	credentials BLOB, 
	credentials_expires FLOAT, 
	notified_start BOOLEAN NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO jobs VALUES('0123456789abcdef0123456789abcdef',1,'running','{"host": "imap.example.org", "port": 993, "security": "tls", "username": "src"}','{"host": "mail.example.net", "port": 993, "security": "tls", "username": "dst"}',NULL,1700000002.0,1700000003.0,NULL,'{"phase": "copying", "messages_done": 42}',NULL,NULL,'old-host|123|456',1700000033.0,'789|1011',1,1,0,X'00ff',NULL,1);
INSERT INTO jobs VALUES('fedcba9876543210fedcba9876543210',1,'done','{"host": "imap.example.org", "port": 993, "security": "tls", "username": "src2"}','{"host": "mail.example.net", "port": 993, "security": "tls", "username": "dst2"}','{"include": ["INBOX"]}',1700000004.0,1700000005.0,1700000006.0,'{}','/var/lib/yippiemove/jobs/fedcba9876543210fedcba9876543210/report.json',NULL,NULL,NULL,NULL,1,1,0,NULL,NULL,1);
CREATE TABLE idempotency_keys (
	user_id INTEGER NOT NULL, 
	"key" VARCHAR(255) NOT NULL, 
	body_hash VARCHAR(64) NOT NULL, 
	status_code INTEGER NOT NULL, 
	response JSON NOT NULL, 
	created FLOAT NOT NULL, 
	PRIMARY KEY (user_id, "key"), 
	FOREIGN KEY(user_id) REFERENCES users (id) ON DELETE CASCADE
);
INSERT INTO idempotency_keys VALUES(1,'k-1','cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd',201,'{"id": "0123456789abcdef0123456789abcdef", "status": "queued"}',1700000002.0);
CREATE UNIQUE INDEX ix_users_email ON users (email);
CREATE INDEX ix_web_sessions_user_id ON web_sessions (user_id);
CREATE INDEX ix_web_sessions_expires ON web_sessions (expires);
CREATE INDEX ix_auth_throttle_last ON auth_throttle (last);
CREATE INDEX ix_pending_signups_expires ON pending_signups (expires);
CREATE INDEX ix_pending_signups_email ON pending_signups (email);
CREATE INDEX ix_api_tokens_user_id ON api_tokens (user_id);
CREATE UNIQUE INDEX ix_api_tokens_token_hash ON api_tokens (token_hash);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_user_id ON jobs (user_id);
CREATE INDEX ix_idempotency_keys_created ON idempotency_keys (created);
COMMIT;
