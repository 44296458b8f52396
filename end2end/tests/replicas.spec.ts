// Several replicas behind HAProxy, as a person sees them: the agent holds its socket on one
// replica, the browser is pinned to another by the balancer's cookie, and the status, the deploy,
// its live log and the container logs all reach the page (README, "Running several replicas").

import { test, expect, hydrated, openDashboard } from './stagely';
import { Cluster } from './cluster';
import { addProject, deployAndWatch, ensureImage, HostProject } from './project';

test.skip(!process.env.TEST_DATABASE_URL, 'several replicas need PostgreSQL: set TEST_DATABASE_URL');

test('with the agent on one replica and the browser on another, status, deploy and logs all reach the page', async ({ page }) => {
  test.setTimeout(120_000);
  ensureImage();
  const cluster = await Cluster.create('edge');
  let project: HostProject | null = null;
  try {
    project = new HostProject(cluster.dataDir);
    // Only r1 is up when the agent dials the balancer: it holds the agent.
    await cluster.start(0);
    await cluster.startAgent();
    await cluster.start(1);
    expect(cluster.replicaLog(0)).toContain('Agent Connected');

    // The browser gets r2's cookie, so every page and call goes to r2 (checked below), and its
    // live feed too (the same cookie; the deploy and logs below reach the page through it).
    await page.context().addCookies([{ name: 'stagely_replica', value: 'r2', url: cluster.url }]);
    const servedBy = new Set<string>();
    page.on('response', (response) => {
      const replica = response.headers()['x-stagely-replica'];
      if (replica) servedBy.add(replica);
    });
    await openDashboard(page, cluster);
    await expect(page.locator('table.servers tr', { hasText: 'edge' }).locator('.status')).toHaveText('Connected');

    await addProject(page, project, 'edge');
    await hydrated(page);
    let navigations = 0;
    page.on('framenavigated', () => navigations++);
    // The deploy's steps and the container logs, told by the agent to r1, reach r2's tab live.
    await deployAndWatch(page, project);
    await expect(page.locator('.deploy-live .badge')).toHaveText('Succeeded', { timeout: 60_000 });
    expect(navigations).toBe(0);
    await page.screenshot({ path: test.info().outputPath('across-replicas.png'), fullPage: true });

    expect([...servedBy]).toEqual(['r2']);
    expect(cluster.replicaLog(1)).not.toContain('Agent Connected');
  } catch (error) {
    await test.info().attach('cluster logs', { body: cluster.logs(), contentType: 'text/plain' });
    throw error;
  } finally {
    project?.remove();
    await cluster.stop();
  }
});
