// SPDX-License-Identifier: GPL-2.0
/*
 * tessera-edu: a minimal driver for QEMU's "edu" device (PCI 1234:11e8), so
 * that Tessera's testbed guests can show that MSI and DMA of a passed-through
 * edu work.  MSI only.  Attributes in /sys/bus/pci/devices/<bdf>/:
 *   id (r)           register 0x00, e.g. 0x010000ed
 *   irq_count (r)    interrupts handled since probe
 *   raise (w)        N: raise N interrupts, waiting 1 s for each
 *   raise_burst (w)  N: raise N interrupts back to back, not waiting
 *   dma_check (r)    4 KiB RAM -> edu -> RAM: "ok 4096 bytes" or "fail ..."
 */
#include <linux/completion.h>
#include <linux/dma-mapping.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/iopoll.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>

#define EDU_NAME		"tessera-edu"
#define EDU_ID			0x00
#define EDU_IRQ_STATUS		0x24
#define EDU_IRQ_RAISE		0x60
#define EDU_IRQ_ACK		0x64
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_COUNT		0x90
#define EDU_DMA_CMD		0x98
#define  EDU_DMA_START		 BIT(0)
#define  EDU_DMA_TO_RAM		 BIT(1)
#define EDU_BUF_ADDR		0x40000	/* the device's buffer */
#define EDU_BUF_SIZE		4096
#define EDU_DMA_TIMEOUT_US	1000000
#define EDU_RAISE_MAX		1000000

struct edu {
	void __iomem *mmio;
	struct mutex lock;	/* one raise or DMA sequence at a time */
	struct completion irq_done;
	atomic_t irq_count;
};

static irqreturn_t edu_irq(int irq, void *data)
{
	struct edu *edu = data;

	writel(readl(edu->mmio + EDU_IRQ_STATUS), edu->mmio + EDU_IRQ_ACK);
	atomic_inc(&edu->irq_count);	/* MSI: one call per message */
	complete(&edu->irq_done);
	return IRQ_HANDLED;
}

static ssize_t id_show(struct device *dev, struct device_attribute *attr,
		       char *buf)
{
	struct edu *edu = dev_get_drvdata(dev);

	return sysfs_emit(buf, "0x%08x\n", readl(edu->mmio + EDU_ID));
}
static DEVICE_ATTR_RO(id);

static ssize_t irq_count_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct edu *edu = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%d\n", atomic_read(&edu->irq_count));
}
static DEVICE_ATTR_RO(irq_count);

/* Raise N interrupts; with @wait, one at a time, each within 1 s. */
static ssize_t edu_raise(struct device *dev, const char *buf, size_t count,
			 bool wait)
{
	struct edu *edu = dev_get_drvdata(dev);
	unsigned int i, n;
	long left;
	int ret;

	ret = kstrtouint(buf, 0, &n);
	if (ret || n > EDU_RAISE_MAX)
		return -EINVAL;
	mutex_lock(&edu->lock);
	for (i = 0; i < n && !ret; i++) {
		reinit_completion(&edu->irq_done);
		writel(1, edu->mmio + EDU_IRQ_RAISE);
		if (!wait)
			continue;
		left = wait_for_completion_interruptible_timeout(&edu->irq_done, HZ);
		if (left < 0)
			ret = -EINTR;
		if (!left) {
			ret = -ETIMEDOUT;
			dev_err(dev, "raise: interrupt %u of %u did not arrive within 1 s (irq_count %d)\n",
				i + 1, n, atomic_read(&edu->irq_count));
		}
	}
	mutex_unlock(&edu->lock);
	return ret ? ret : count;
}

static ssize_t raise_store(struct device *dev, struct device_attribute *attr,
			   const char *buf, size_t count)
{
	return edu_raise(dev, buf, count, true);
}
static DEVICE_ATTR_WO(raise);

static ssize_t raise_burst_store(struct device *dev,
				 struct device_attribute *attr,
				 const char *buf, size_t count)
{
	return edu_raise(dev, buf, count, false);
}
static DEVICE_ATTR_WO(raise_burst);

/* One DMA of EDU_BUF_SIZE bytes; polls until the device clears START. */
static int edu_dma(struct edu *edu, u64 src, u64 dst, u32 cmd)
{
	u32 val;

	writeq(src, edu->mmio + EDU_DMA_SRC);
	writeq(dst, edu->mmio + EDU_DMA_DST);
	writeq(EDU_BUF_SIZE, edu->mmio + EDU_DMA_COUNT);
	writeq(cmd | EDU_DMA_START, edu->mmio + EDU_DMA_CMD);
	return readl_poll_timeout(edu->mmio + EDU_DMA_CMD, val,
				  !(val & EDU_DMA_START), 1000,
				  EDU_DMA_TIMEOUT_US);
}

static ssize_t dma_check_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct edu *edu = dev_get_drvdata(dev);
	dma_addr_t out_dma, in_dma;
	u32 *out, *in;
	ssize_t len;
	int i, n = EDU_BUF_SIZE / 4;

	out = dma_alloc_coherent(dev, EDU_BUF_SIZE, &out_dma, GFP_KERNEL);
	in = dma_alloc_coherent(dev, EDU_BUF_SIZE, &in_dma, GFP_KERNEL);
	if (!out || !in) {
		len = sysfs_emit(buf, "fail dma_alloc_coherent\n");
		goto out;
	}
	for (i = 0; i < n; i++)
		out[i] = 0xed000000 | (i * 0x10101);
	memset(in, 0, EDU_BUF_SIZE);

	mutex_lock(&edu->lock);
	if (edu_dma(edu, out_dma, EDU_BUF_ADDR, 0)) {
		len = sysfs_emit(buf, "fail timeout RAM->edu\n");
	} else if (edu_dma(edu, EDU_BUF_ADDR, in_dma, EDU_DMA_TO_RAM)) {
		len = sysfs_emit(buf, "fail timeout edu->RAM\n");
	} else {
		for (i = 0; i < n && in[i] == out[i]; i++)
			;
		if (i == n)
			len = sysfs_emit(buf, "ok %d bytes\n", EDU_BUF_SIZE);
		else
			len = sysfs_emit(buf, "fail mismatch at offset %d: got 0x%08x, want 0x%08x\n",
					 i * 4, in[i], out[i]);
	}
	mutex_unlock(&edu->lock);
	if (strncmp(buf, "ok", 2))
		dev_err(dev, "dma_check (RAM %pad -> edu -> RAM %pad): %s",
			&out_dma, &in_dma, buf);
out:
	if (in)
		dma_free_coherent(dev, EDU_BUF_SIZE, in, in_dma);
	if (out)
		dma_free_coherent(dev, EDU_BUF_SIZE, out, out_dma);
	return len;
}
static DEVICE_ATTR_RO(dma_check);

static struct attribute *edu_attrs[] = {
	&dev_attr_id.attr, &dev_attr_irq_count.attr, &dev_attr_raise.attr,
	&dev_attr_raise_burst.attr, &dev_attr_dma_check.attr, NULL,
};
ATTRIBUTE_GROUPS(edu);

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct device *dev = &pdev->dev;
	struct edu *edu;
	int ret;

	edu = devm_kzalloc(dev, sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	mutex_init(&edu->lock);
	init_completion(&edu->irq_done);
	ret = pcim_enable_device(pdev);
	if (ret)
		return dev_err_probe(dev, ret, "cannot enable the device\n");
	edu->mmio = pcim_iomap_region(pdev, 0, EDU_NAME);
	if (IS_ERR(edu->mmio))
		return dev_err_probe(dev, PTR_ERR(edu->mmio), "cannot map BAR0\n");
	pci_set_master(pdev);
	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(28));
	if (ret)
		return dev_err_probe(dev, ret, "no usable 28-bit DMA mask\n");
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	if (ret < 0)
		return dev_err_probe(dev, ret, "MSI unavailable (MSI only, no INTx): does the VMM expose edu's MSI capability?\n");
	pci_set_drvdata(pdev, edu);
	ret = devm_request_irq(dev, pci_irq_vector(pdev, 0), edu_irq, 0,
			       EDU_NAME, edu);
	if (ret)
		return dev_err_probe(dev, ret, "cannot request the MSI\n");
	dev_info(dev, "id 0x%08x, MSI as irq %d\n", readl(edu->mmio + EDU_ID),
		 pci_irq_vector(pdev, 0));
	return 0;
}

static const struct pci_device_id edu_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },
	{ }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name		= EDU_NAME,
	.id_table	= edu_ids,
	.probe		= edu_probe,
	.dev_groups	= edu_groups,
};
module_pci_driver(edu_driver);

MODULE_DESCRIPTION("QEMU edu device: MSI and DMA checks for Tessera's testbed");
MODULE_LICENSE("GPL");
