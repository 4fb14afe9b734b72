/*
 * pipeswarm's Mosquitto 2.x authentication plugin (plugin API v5): derived passwords.
 *
 * Every account's password is HMAC-SHA256(secret, "mqtt:" + username), URL-safe
 * base64 without padding -- exactly pipeline/auth.py's mqtt_password(). So the
 * broker checks any device id without a password file listing 50,000 devices,
 * and the load side computes the same value from the stack secret.
 *
 * It only authenticates (MOSQ_EVT_BASIC_AUTH); topic rights come from the
 * broker's own acl_file (pattern write sensors/%u/coordinates, ...).
 *
 * Client ids: a client that takes an id already connected kicks that client off
 * (and, with a clean session, wipes its persistent session). Mosquitto has no
 * per-user client id rule, so this plugin refuses at CONNECT, before the takeover:
 *   - a reserved client id (reserved_clientids: id=username,...) to anyone but its owner;
 *   - any other client id that is not the username, unless the user is one of
 *     free_clientid_users (the gateway, the tool account).
 *
 * Options (plugin_opt_<key> in mosquitto.conf):
 *   secret_file           path of the stack secret (required)
 *   reserved_clientids    id=username[,id=username...]
 *   free_clientid_users   username[,username...]
 *
 * Built by pipeline/_mqtt_plugin.py: gcc -shared -fPIC ... -lcrypto
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_SECRET 1024
#define PASSWORD_LEN 43 /* base64url of 32 bytes, no padding */

static mosquitto_plugin_id_t *plugin_id = NULL;
static char secret[MAX_SECRET];
static size_t secret_len = 0;
static char *reserved = NULL; /* ",id=user,id=user," */
static char *free_users = NULL; /* ",user,user," */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url(const unsigned char *in, size_t n, char *out)
{
	size_t i, o = 0;
	for(i = 0; i + 2 < n; i += 3){
		unsigned v = (in[i] << 16) | (in[i+1] << 8) | in[i+2];
		out[o++] = B64URL[(v >> 18) & 63];
		out[o++] = B64URL[(v >> 12) & 63];
		out[o++] = B64URL[(v >> 6) & 63];
		out[o++] = B64URL[v & 63];
	}
	if(n - i == 1){
		unsigned v = in[i] << 16;
		out[o++] = B64URL[(v >> 18) & 63];
		out[o++] = B64URL[(v >> 12) & 63];
	}else if(n - i == 2){
		unsigned v = (in[i] << 16) | (in[i+1] << 8);
		out[o++] = B64URL[(v >> 18) & 63];
		out[o++] = B64URL[(v >> 12) & 63];
		out[o++] = B64URL[(v >> 6) & 63];
	}
	out[o] = '\0';
}

/* ",a,b," style list: does it hold ",item," (or ",item=" when eq)? */
static const char *list_find(const char *list, const char *item, char end)
{
	size_t n = strlen(item);
	const char *p = list;
	if(!list) return NULL;
	while((p = strstr(p, item)) != NULL){
		if(p > list && p[-1] == ',' && p[n] == end) return p + n + 1;
		p++;
	}
	return NULL;
}

static char *wrap_list(const char *value)
{
	size_t n = strlen(value);
	char *s = malloc(n + 3);
	if(!s) return NULL;
	snprintf(s, n + 3, ",%s,", value);
	return s;
}

static int password_ok(const char *username, const char *password)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	char expected[64];
	size_t ulen = strlen(username);
	unsigned char *msg = malloc(ulen + 5);
	unsigned char diff = 0;
	int i;

	if(!msg) return 0;
	memcpy(msg, "mqtt:", 5);
	memcpy(msg + 5, username, ulen);
	if(!HMAC(EVP_sha256(), secret, (int)secret_len, msg, ulen + 5, digest, &digest_len)){
		free(msg);
		return 0;
	}
	free(msg);
	b64url(digest, digest_len, expected);
	if(strlen(password) != PASSWORD_LEN || strlen(expected) != PASSWORD_LEN) return 0;
	for(i = 0; i < PASSWORD_LEN; i++) diff |= (unsigned char)(password[i] ^ expected[i]);
	return diff == 0;
}

/* Is username allowed to connect with client_id? */
static int clientid_ok(const char *username, const char *client_id)
{
	const char *owner;
	size_t n;

	if(!client_id) return 0;
	owner = list_find(reserved, client_id, '=');
	if(owner){
		n = strlen(username);
		return strncmp(owner, username, n) == 0 && owner[n] == ',';
	}
	if(strcmp(username, client_id) == 0) return 1;
	return list_find(free_users, username, ',') != NULL;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *ed = event_data;
	const char *client_id;
	(void)event; (void)userdata;

	if(!ed->username || !ed->password) return MOSQ_ERR_AUTH;
	if(!password_ok(ed->username, ed->password)) return MOSQ_ERR_AUTH;
	client_id = mosquitto_client_id(ed->client);
	if(!clientid_ok(ed->username, client_id)){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"pipeswarm auth: user %s may not use client id %s", ed->username,
				client_id ? client_id : "(none)");
		return MOSQ_ERR_AUTH;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	const char *secret_file = NULL;
	FILE *f;
	int i;
	(void)userdata;

	plugin_id = identifier;
	for(i = 0; i < opt_count; i++){
		if(!strcmp(opts[i].key, "secret_file")) secret_file = opts[i].value;
		else if(!strcmp(opts[i].key, "reserved_clientids")) reserved = wrap_list(opts[i].value);
		else if(!strcmp(opts[i].key, "free_clientid_users")) free_users = wrap_list(opts[i].value);
	}
	if(!secret_file){
		mosquitto_log_printf(MOSQ_LOG_ERR, "pipeswarm auth: plugin_opt_secret_file is required");
		return MOSQ_ERR_INVAL;
	}
	f = fopen(secret_file, "r");
	if(!f){
		mosquitto_log_printf(MOSQ_LOG_ERR, "pipeswarm auth: cannot read %s", secret_file);
		return MOSQ_ERR_INVAL;
	}
	secret_len = fread(secret, 1, sizeof(secret) - 1, f);
	fclose(f);
	while(secret_len > 0 && isspace((unsigned char)secret[secret_len - 1])) secret_len--;
	secret[secret_len] = '\0';
	if(secret_len == 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "pipeswarm auth: %s is empty", secret_file);
		return MOSQ_ERR_INVAL;
	}
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)userdata; (void)opts; (void)opt_count;
	free(reserved);
	free(free_users);
	reserved = free_users = NULL;
	memset(secret, 0, sizeof(secret));
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
